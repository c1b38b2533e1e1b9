//! The one rule for brand names, applied wherever a brand enters a gallery.
//!
//! Why one rule: a brand name travels. It is a URL path segment of the service
//! (`/v1/gallery/{brand}`), a folder name for `gallery build`, a string from Python, a column of
//! the PostgreSQL gallery, a label drawn on images and a key in the audit log. A name like
//! `../../etc`, one with a newline that forges an audit line, one of 10 000 characters, or two
//! spellings of `café` (composed and decomposed) that look identical but are different brands
//! are each harmless in one place and a hole in another. So every entry point — the CLI, the
//! server, the Python package and the database gallery — goes through [`Gallery::add`], which
//! calls [`normalize`], and nothing else decides what a brand name may be.
//!
//! The rule (checked on the NFC form, which is what is stored):
//! * 1 to [`MAX_CHARS`] characters;
//! * no leading or trailing whitespace;
//! * no control characters (C0, DEL, C1), and no invisible formatting characters (zero-width
//!   spaces and joiners, bidirectional overrides, the byte-order mark) that make two names look
//!   alike;
//! * no path separators (`/`, `\`);
//! * no leading dot (`.`, `..`, hidden files);
//! * Unicode normalised to NFC: a name given in another normal form is stored in NFC.
//!
//! Galleries written before the rule still load (their names pass [`check_stored`], the older
//! and weaker check), and their brands can be searched and removed.
//!
//! [`Gallery::add`]: crate::Gallery::add

use unicode_normalization::UnicodeNormalization;

use crate::error::{IndexError, Result};

/// The longest brand name, in characters (Unicode scalar values) of its NFC form.
pub const MAX_CHARS: usize = 128;

/// How many characters of a refused name an error message repeats.
const SHOWN_CHARS: usize = 64;

/// Characters that change how text is displayed without being visible themselves.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{2028}' | '\u{2029}')
}

/// A refused name, shortened for the error message (so a 10 000-character name does not fill a log).
fn refused(name: &str, reason: &'static str) -> IndexError {
    let shown: String = if name.chars().count() > SHOWN_CHARS { name.chars().take(SHOWN_CHARS).chain(std::iter::once('…')).collect() } else { name.to_string() };
    IndexError::InvalidBrand { name: shown, reason }
}

/// The name as stored (NFC), or why it is refused.
pub fn normalize(name: &str) -> Result<String> {
    let nfc: String = name.nfc().collect();
    let n = nfc.chars().count();
    let reason = if n == 0 {
        "must not be empty"
    } else if n > MAX_CHARS {
        "longer than 128 characters"
    } else if nfc.trim() != nfc {
        "must not start or end with whitespace"
    } else if nfc.chars().any(char::is_control) {
        "must not contain control characters"
    } else if nfc.chars().any(is_invisible_format) {
        "must not contain invisible formatting characters"
    } else if nfc.contains(['/', '\\']) {
        "must not contain path separators (/ or \\)"
    } else if nfc.starts_with('.') {
        "must not start with a dot"
    } else {
        return Ok(nfc);
    };
    Err(refused(name, reason))
}

/// Whether `name` is acceptable and already in its stored (NFC) form.
pub fn is_valid(name: &str) -> bool {
    normalize(name).is_ok_and(|n| n == name)
}

/// The check on names read back from a gallery file or database: non-empty, no surrounding
/// whitespace, no control characters. Weaker than [`normalize`] so that galleries written
/// before the rule still load.
pub fn check_stored(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.trim() != name {
        "must not start or end with whitespace"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(refused(name, reason))
}

/// `n` generated names mixing ordinary words with path tricks, control and invisible
/// characters, dots, whitespace, decomposed accents and very long runs: the fuzz input every
/// entry point's tests feed through the rule (deterministic for a seed).
pub fn tricky_names(seed: u64, n: usize) -> Vec<String> {
    const PIECES: &[&str] = &[
        "brand",
        "Bank",
        "pay",
        "café",
        "Cafe\u{301}",
        "銀行",
        "x",
        "-",
        "_",
        " ",
        "(",
        ")",
        ".",
        "..",
        "../",
        "..\\",
        "/",
        "\\",
        "%2e%2e%2f",
        "%00",
        "\0",
        "\n",
        "\r",
        "\t",
        "\u{1b}[31m",
        "\u{7f}",
        "\u{85}",
        "\u{200B}",
        "\u{202E}",
        "\u{FEFF}",
        "\u{2028}",
        "\u{3000}",
        "etc",
        "passwd",
        "C:",
        "~",
        "$HOME",
        "\"",
        "'",
        "<script>",
        "{\"a\":1}",
        "😀",
        "e\u{301}\u{301}",
    ];
    let mut rng = proxima_base::SplitMix64(seed);
    (0..n)
        .map(|i| {
            if i % 997 == 0 {
                // Long names around the limit.
                return "a".repeat(MAX_CHARS - 2 + rng.below(5)) + if i % 2 == 0 { "" } else { "/" };
            }
            let parts = 1 + rng.below(5);
            (0..parts).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> &'static str {
        match normalize(name) {
            Err(IndexError::InvalidBrand { reason, .. }) => reason,
            other => panic!("{name:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn length_is_1_to_128_characters() {
        assert_eq!(reason(""), "must not be empty");
        assert_eq!(normalize(&"é".repeat(128)).unwrap().chars().count(), 128);
        assert_eq!(reason(&"a".repeat(129)), "longer than 128 characters");
        let long = "x".repeat(10_000);
        let msg = normalize(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "the message repeats a shortened name: {msg}");
    }

    #[test]
    fn control_and_invisible_characters_are_refused() {
        for n in ["a\nb", "a\0b", "a\tb", "a\u{7f}", "a\u{85}b", "evil\r\n{\"action\":\"remove\"}"] {
            assert_eq!(reason(n), "must not contain control characters", "{n:?}");
        }
        for n in ["pay\u{200B}pal", "a\u{202E}b", "\u{FEFF}bank", "a\u{2028}b"] {
            assert_eq!(reason(n), "must not contain invisible formatting characters", "{n:?}");
        }
    }

    #[test]
    fn path_separators_and_a_leading_dot_are_refused() {
        for n in ["../../etc", "a/b", "a\\b", "..\\x", "/etc/passwd"] {
            assert!(normalize(n).is_err(), "{n:?}");
        }
        assert_eq!(reason("a/b"), "must not contain path separators (/ or \\)");
        for n in [".", "..", ".hidden"] {
            assert_eq!(reason(n), "must not start with a dot", "{n:?}");
        }
        assert_eq!(normalize("a.b..c").unwrap(), "a.b..c");
    }

    #[test]
    fn surrounding_whitespace_is_refused() {
        for n in [" x", "x ", "\u{3000}x"] {
            assert_eq!(reason(n), "must not start or end with whitespace", "{n:?}");
        }
        assert_eq!(normalize("Bank of X").unwrap(), "Bank of X");
    }

    #[test]
    fn names_are_stored_in_nfc() {
        let decomposed = "Cafe\u{301}";
        assert_eq!(normalize(decomposed).unwrap(), "Caf\u{e9}");
        assert!(!is_valid(decomposed));
        assert!(is_valid("Caf\u{e9}"));
        assert_eq!(normalize("(background)").unwrap(), "(background)");
        assert_eq!(normalize("Ünïcødé 銀行").unwrap(), "Ünïcødé 銀行");
    }

    #[test]
    fn stored_names_keep_the_older_check() {
        assert!(check_stored("legacy/name").is_ok());
        assert!(check_stored(".old").is_ok());
        assert!(check_stored("a\nb").is_err());
        assert!(check_stored("").is_err());
    }
}
