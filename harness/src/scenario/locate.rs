//! Where a validation error's field is in the scenario text: toml names the
//! line of a parse error itself; a well-formed but inconsistent field
//! (`rx.ring_size: 12 is not a multiple of 8`) is found here from the name
//! its message starts with.

/// The 1-based line of `field` (`table.key`, `table`, or `steps`) in `text`.
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    let (table, key) = match field.split_once('.') {
        Some((t, k)) => (t, Some(k)),
        None => (field, None),
    };
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| {
        let l = l.trim();
        l == format!("[{table}]") || l == format!("[[{table}]]")
    };
    let key_line = |l: &&str| l.split_once('=').is_some_and(|(k, _)| k.trim() == table);
    let Some(start) = lines.iter().position(|l| header(l)) else {
        // A top-level key (`expect_reasons`), written before the first table.
        return if key.is_none() {
            lines.iter().take_while(|l| !l.trim_start().starts_with('[')).position(key_line).map(|i| i + 1)
        } else {
            None
        };
    };
    match key {
        Some(key) => Some(key_in_table(&lines, start, key)),
        None => Some(start + 1),
    }
}

/// The 1-based line of `key` in the table whose header is at index
/// `header`, or of the header when the key is not written there.
fn key_in_table(lines: &[&str], header: usize, key: &str) -> usize {
    lines[header + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        .map_or(header + 1, |i| header + 2 + i)
}

/// The 1-based line of `key` in the `index`-th `[[steps]]` entry (or of
/// that entry's header when the key is not found).
pub fn line_in_step(text: &str, index: usize, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().enumerate().filter(|(_, l)| l.trim() == "[[steps]]").map(|(i, _)| i).nth(index)?;
    Some(key_in_table(&lines, start, key))
}

/// The 1-based line in the `index`-th `[[steps]]` entry of the first
/// backquoted word of `message` (serde's "unknown variant `x`" or "unknown
/// field `x`"), as a key or as a quoted value; the entry's header when the
/// message names nothing written there.
pub fn line_of_named_in_step(text: &str, index: usize, message: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().enumerate().filter(|(_, l)| l.trim() == "[[steps]]").map(|(i, _)| i).nth(index)?;
    let word = message.split('`').nth(1).filter(|w| !w.is_empty());
    let hit = word.and_then(|w| {
        lines[start + 1..].iter().take_while(|l| !l.trim_start().starts_with('[')).position(|l| {
            l.split_once('=').is_some_and(|(k, v)| k.trim() == w || v.split('#').next().unwrap_or("").trim() == format!("\"{w}\""))
        })
    });
    Some(hit.map_or(start + 1, |i| start + 2 + i))
}

/// The field a validation message names first (`rx.ring_size: …` → `rx.ring_size`).
pub fn field_of(message: &str) -> Option<&str> {
    let (head, _) = message.split_once(':')?;
    let ok = !head.is_empty() && head.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    ok.then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "description = \"d\"\n\n[rx]\nring_size = 12\n# comment\nframes = 10\n\n[nvme]\npersist = true\n\n[[steps]]\ndo = \"boot\"\n";

    #[test]
    fn finds_a_key_inside_its_table() {
        assert_eq!(line_of(TEXT, "rx.ring_size"), Some(4));
        assert_eq!(line_of(TEXT, "rx.frames"), Some(6));
        assert_eq!(line_of(TEXT, "nvme.persist"), Some(9));
    }

    #[test]
    fn a_key_not_written_points_at_its_table_and_a_table_at_its_header() {
        assert_eq!(line_of(TEXT, "rx.refill"), Some(3));
        assert_eq!(line_of(TEXT, "steps"), Some(11));
        assert_eq!(line_of(TEXT, "pkernfs.base_mib"), None);
    }

    #[test]
    fn a_top_level_key_is_found_before_the_first_table() {
        assert_eq!(line_of(TEXT, "description"), Some(1));
        assert_eq!(line_of(TEXT, "expect"), None);
    }

    #[test]
    fn a_step_field_is_found_in_its_own_entry() {
        let t = "[[steps]]\ndo = \"boot\"\n\n[[steps]]\ndo = \"inject\"\nspeed = 1\n";
        assert_eq!(line_in_step(t, 1, "speed"), Some(6));
        assert_eq!(line_in_step(t, 0, "speed"), Some(1));
        assert_eq!(line_in_step(t, 2, "speed"), None);
    }

    #[test]
    fn the_field_is_the_dotted_name_before_the_first_colon() {
        assert_eq!(field_of("rx.ring_size: 12 is not a positive multiple of 8"), Some("rx.ring_size"));
        assert_eq!(field_of("steps: the first step must be `do = \"boot\"`"), Some("steps"));
        assert_eq!(field_of("The carve-out: …"), None);
    }
}
