//! A small GitHub-flavoured markdown table writer.
//!
//! Why: reports (`report.md`) and benchmark summaries need tables that read well both
//! rendered and as plain text, so columns are padded to a common width and numeric columns
//! are right-aligned; cell text is escaped so a `|` in a class name cannot break the table.

use crate::error::{Result, invalid};

/// Render a markdown table; numeric columns (every body cell a number) are right-aligned.
///
/// Every row must have as many cells as the header. Cells are escaped (`|` becomes `\|`,
/// line breaks become spaces).
pub fn markdown_table<H: AsRef<str>, C: AsRef<str>>(header: &[H], rows: &[Vec<C>]) -> Result<String> {
    if header.is_empty() {
        return Err(invalid("markdown table", "the header has no column"));
    }
    let ncol = header.len();
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != ncol) {
        return Err(invalid("markdown table", format!("row {i} has {} cells but the header has {ncol}", r.len())));
    }
    let head: Vec<String> = header.iter().map(|h| escape(h.as_ref())).collect();
    let body: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| escape(c.as_ref())).collect()).collect();
    let numeric: Vec<bool> = (0..ncol).map(|j| !body.is_empty() && body.iter().all(|r| is_number(&r[j]))).collect();
    let width: Vec<usize> = (0..ncol).map(|j| body.iter().map(|r| r[j].chars().count()).chain([head[j].chars().count(), 3]).max().unwrap_or(3)).collect();

    let line = |cells: &[String]| {
        let padded: Vec<String> =
            cells.iter().enumerate().map(|(j, c)| if numeric[j] { format!("{c:>w$}", w = width[j]) } else { format!("{c:<w$}", w = width[j]) }).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&head);
    let rule: Vec<String> = (0..ncol).map(|j| if numeric[j] { format!("{}:", "-".repeat(width[j] - 1)) } else { "-".repeat(width[j]) }).collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in &body {
        out.push_str(&line(r));
    }
    Ok(out)
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn is_number(cell: &str) -> bool {
    let c = cell.trim().trim_end_matches('%');
    !c.is_empty() && c.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_aligns_and_escapes() {
        let t = markdown_table(&["class", "P@1"], &[vec!["a|b", "0.5"], vec!["long name", "12.25"]]).unwrap();
        let expected = "\
| class     |   P@1 |
| --------- | ----: |
| a\\|b      |   0.5 |
| long name | 12.25 |
";
        assert_eq!(t, expected);
    }

    #[test]
    fn mixed_columns_stay_left_aligned_and_widths_are_checked() {
        let t = markdown_table(&["x"], &[vec!["1"], vec!["n/a"]]).unwrap();
        assert!(t.contains("| --- |"), "{t}");
        let e = markdown_table(&["a", "b"], &[vec!["1"]]).unwrap_err();
        assert!(e.to_string().contains("row 0 has 1 cells but the header has 2"), "{e}");
        assert!(markdown_table::<&str, &str>(&[], &[]).is_err());
        // A header-only table is valid markdown.
        assert_eq!(markdown_table::<_, &str>(&["a"], &[]).unwrap(), "| a   |\n| --- |\n");
    }
}
