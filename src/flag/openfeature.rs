//! OpenFeature's vocabulary for an evaluation: the one mapping that both
//! `FLAG.DETAIL` (`openfeature_reason`) and the OFREP handler use.

use super::compile::{CompiledFlag, CompiledServe};
use super::eval::{Evaluation, Reason};

/// The OpenFeature reason (`STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`,
/// `DISABLED`) for `evaluation` of `flag`:
/// - off, or a prerequisite failed: `DISABLED` (the off variation was served);
/// - the variation came from a rollout (in a rule or the fallthrough): `SPLIT`;
/// - an individual target, or a rule serving a fixed variation: `TARGETING_MATCH`;
/// - a fixed fallthrough on a flag with no rules, targets or prerequisites: `STATIC`;
/// - any other fixed fallthrough: `DEFAULT`.
pub fn openfeature_reason(flag: &CompiledFlag, evaluation: &Evaluation) -> &'static str {
    let rollout = |s: &CompiledServe| matches!(s, CompiledServe::Rollout(_));
    match &evaluation.reason {
        Reason::Off | Reason::PrerequisiteFailed(_) => "DISABLED",
        Reason::TargetMatch => "TARGETING_MATCH",
        Reason::RuleMatch { index, .. } => match flag.rules.get(*index) {
            Some(rule) if rollout(&rule.serve) => "SPLIT",
            _ => "TARGETING_MATCH",
        },
        Reason::Fallthrough if rollout(&flag.fallthrough) => "SPLIT",
        Reason::Fallthrough
            if flag.rules.is_empty()
                && flag.targets.is_empty()
                && flag.prerequisites.is_empty() =>
        {
            "STATIC"
        }
        Reason::Fallthrough => "DEFAULT",
    }
}
