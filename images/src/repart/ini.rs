//! The INI shape of a repart.d file as systemd's configuration parser
//! reads it: `[Section]` headers, `Key=Value` lines (whitespace around
//! both trimmed), comments on lines starting with `#` or `;`, a trailing
//! `\` continuing a line onto the next. Keys repeat; what a repetition
//! means is the key's business (`super::definition`).

use super::error::Problem;

/// One `Key=Value` line of a `[Partition]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The line it starts on, from 1.
    pub line: usize,
    /// The key as written.
    pub key: String,
    /// The value, trimmed (may be empty: an empty assignment resets).
    pub value: String,
}

/// Reads `text`; a problem comes with its line and the key (or section)
/// it concerns.
pub fn parse(text: &str) -> Result<Vec<Assignment>, (usize, String, Problem)> {
    let mut out = Vec::new();
    let mut in_partition = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        // A comment inside a continued line is skipped, as systemd does.
        if pending.is_none() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if pending.is_some() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        let (start, mut joined) = match pending.take() {
            Some((s, mut acc)) => {
                acc.push(' ');
                acc.push_str(line);
                (s, acc)
            }
            None => (n, line.to_owned()),
        };
        if let Some(head) = joined.strip_suffix('\\') {
            joined = head.trim_end().to_owned();
            pending = Some((start, joined));
            continue;
        }
        if let Some(rest) = joined.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| (start, joined.clone(), Problem::BadSection))?;
            if name != "Partition" {
                return Err((start, format!("[{name}]"), Problem::OtherSection));
            }
            in_partition = true;
            continue;
        }
        let Some((key, value)) = joined.split_once('=') else {
            return Err((start, joined.clone(), Problem::NotAssignment));
        };
        let key = key.trim().to_owned();
        if !in_partition {
            return Err((start, key, Problem::OutsideSection));
        }
        out.push(Assignment {
            line: start,
            key,
            value: value.trim().to_owned(),
        });
    }
    if let Some((start, acc)) = pending {
        return Err((start, acc, Problem::Unterminated));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_comments_continuations_and_repeats() {
        let text = "# a comment\n; another\n[Partition]\nType = esp\nCopyFiles=/a:/b\nCopyFiles=/c \\\n  :/d\n\nLabel=\n";
        let a = parse(text).unwrap();
        let kv: Vec<(usize, &str, &str)> = a
            .iter()
            .map(|a| (a.line, a.key.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            kv,
            [
                (4, "Type", "esp"),
                (5, "CopyFiles", "/a:/b"),
                (6, "CopyFiles", "/c :/d"),
                (9, "Label", "")
            ]
        );
    }

    #[test]
    fn refuses_other_sections_stray_lines_and_keys_outside_a_section() {
        let cases: &[(&str, usize, Problem)] = &[
            ("[Match]\nType=esp\n", 1, Problem::OtherSection),
            ("Type=esp\n", 1, Problem::OutsideSection),
            ("[Partition]\nType esp\n", 2, Problem::NotAssignment),
            ("[Partition\n", 1, Problem::BadSection),
            ("[Partition]\nLabel=a \\\n", 2, Problem::Unterminated),
        ];
        let mut bad = Vec::new();
        for (text, line, problem) in cases {
            match parse(text) {
                Err((l, _, p)) if l == *line && p == *problem => {}
                other => bad.push(format!("{text:?}: {other:?}")),
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }
}
