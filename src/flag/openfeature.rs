//! OpenFeature's vocabulary for an evaluation: the one mapping that both
//! `FLAG.DETAIL` (`openfeature_reason`) and the OFREP handler use.

use super::compile::{Attr, CompiledFlag, CompiledServe};
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

/// Whether `evaluation` of `flag` served a rollout that buckets users by
/// their targeting key (`bucket_by` unset or `key`): without a targeting key
/// every user would land in bucket 0, so OFREP answers
/// `TARGETING_KEY_MISSING` rather than a split that is not one.
pub fn split_by_targeting_key(flag: &CompiledFlag, evaluation: &Evaluation) -> bool {
    let serve = match &evaluation.reason {
        Reason::RuleMatch { index, .. } => flag.rules.get(*index).map(|r| &r.serve),
        Reason::Fallthrough => Some(&flag.fallthrough),
        _ => None,
    };
    matches!(serve, Some(CompiledServe::Rollout(r)) if matches!(&r.bucket_by, Attr::Named(n) if &**n == "key"))
}
