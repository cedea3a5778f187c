//! `repeat = N` on a `[[steps]]` entry: the entry runs N times (the
//! 20-update soak is one `live_update` entry). Taken out of the text before
//! the typed parse, each `repeat` line kept in place as a comment, so every
//! parse error still names its own line.

/// Most times one entry may repeat.
pub const MAX_REPEAT: usize = 1000;

/// `text` with each `[[steps]]` entry's `repeat = N` commented out, and per
/// entry in order how many times it runs; or the 1-based line and what is
/// wrong with a `repeat`.
pub fn take_repeats(text: &str) -> Result<(String, Vec<usize>), (usize, String)> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut repeats = Vec::new();
    let mut in_step = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_step = t == "[[steps]]";
            if in_step {
                repeats.push(1);
            }
        }
        let value = line.split_once('=').filter(|(k, _)| k.trim() == "repeat").map(|(_, v)| v);
        match value.filter(|_| in_step) {
            Some(v) => {
                let v = v.split('#').next().unwrap_or("").trim();
                let n = v.parse::<usize>().ok().filter(|n| (1..=MAX_REPEAT).contains(n));
                let Some(n) = n else {
                    return Err((i + 1, format!("repeat = {v}: must be an integer in 1..={MAX_REPEAT}")));
                };
                if let Some(last) = repeats.last_mut() {
                    *last = n;
                }
                out.push_str("# ");
                out.push_str(line);
            }
            None => out.push_str(line),
        }
    }
    Ok((out, repeats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_lines_become_comments_in_place_and_count_per_entry() {
        let text = "[rx]\nrepeat = 9\n\n[[steps]]\ndo = \"boot\"\n\n[[steps]]\ndo = \"live_update\"\nrepeat = 20  # soak\n[[steps]]\ndo = \"settle\"\n";
        let (out, r) = take_repeats(text).unwrap();
        assert_eq!(r, [1, 20, 1]);
        assert_eq!(out.lines().count(), text.lines().count());
        assert_eq!(out.lines().nth(8), Some("# repeat = 20  # soak"));
        assert_eq!(out.lines().nth(1), Some("repeat = 9"), "only inside [[steps]]");
    }

    #[test]
    fn a_bad_repeat_names_its_line() {
        for bad in ["0", "-1", "2.5", "\"3\"", "1001"] {
            let text = format!("[[steps]]\ndo = \"boot\"\nrepeat = {bad}\n");
            let (line, msg) = take_repeats(&text).unwrap_err();
            assert_eq!(line, 3, "{bad}");
            assert!(msg.contains("must be an integer in 1..=1000"), "{msg}");
        }
    }
}
