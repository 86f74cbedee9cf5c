//! Redis-style glob matching (`*`, `?`, `[...]`, `[^...]`, ranges, `\` escapes),
//! on bytes. Used by `MATCH`, `CONFIG GET` and pattern subscriptions.
//!
//! Matching runs in O(pattern × text): a `*` that must be retried resumes from
//! the last star only, so hostile patterns like `a*a*a*a*b` cannot blow up.

/// Whether `text` matches `pattern`; `nocase` folds ASCII case.
pub fn matches(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, next)) = class(pattern, p, text[t], nocase) {
                        if hit {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if eq(pattern[p + 1], text[t], nocase) {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if eq(c, text[t], nocase) {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn eq(a: u8, b: u8, nocase: bool) -> bool {
    if nocase {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

/// Matches `c` against the class starting at `pattern[start] == b'['`.
/// Returns (matched, index after the class). An unterminated class ends at
/// the end of the pattern, as in Redis.
fn class(pattern: &[u8], start: usize, c: u8, nocase: bool) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    loop {
        match pattern.get(i) {
            None => break,
            Some(b']') => {
                i += 1;
                break;
            }
            Some(b'\\') if i + 1 < pattern.len() => {
                hit |= eq(pattern[i + 1], c, nocase);
                i += 2;
            }
            Some(&lo)
                if pattern.get(i + 1) == Some(&b'-')
                    && i + 2 < pattern.len()
                    && pattern[i + 2] != b']' =>
            {
                let hi = pattern[i + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                let (lc, uc) = if nocase {
                    (c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else {
                    (c, c)
                };
                hit |= (lo..=hi).contains(&lc) || (lo..=hi).contains(&uc);
                i += 3;
            }
            Some(&x) => {
                hit |= eq(x, c, nocase);
                i += 1;
            }
        }
    }
    Some((hit != negate, i))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_follow_redis_rules() {
        let m = |p: &str, t: &str| matches(p.as_bytes(), t.as_bytes(), false);
        assert!(m("*", ""));
        assert!(m("prod:*", "prod:new-checkout"));
        assert!(!m("prod:*", "staging:x"));
        assert!(m("h?llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("*a*b", "xxaxxb"));
        assert!(!m("a*", "ba"));
        assert!(m("[z-a]", "m"));
        assert!(matches(b"PROD:*", b"prod:x", true));
    }

    #[test]
    fn hostile_patterns_finish_quickly() {
        let text = "a".repeat(10_000);
        let pattern = "a*".repeat(50) + "b";
        assert!(!matches(pattern.as_bytes(), text.as_bytes(), false));
    }
}
