//! The text of one configuration file and positions inside it.
//!
//! Every validation error in pinwheel points at the file, line and column of
//! the value to change. Raw config structs keep `toml::Spanned` byte ranges;
//! this module turns a byte range into a [`Location`] that carries the line's
//! text, so an error can be rendered long after the file was read, without
//! reading it again.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// A configuration file read into memory.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: Arc<Path>,
    text: String,
}

impl SourceFile {
    /// Reads `path` as UTF-8 text; when this process is root, only if the
    /// file passes [`trust`](super::trust)'s checks.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = super::trust::read(path, super::trust::Strictness::config())?;
        Ok(Self::from_text(path, text))
    }

    /// Wraps text that did not come from disk (tests, generated files).
    pub fn from_text(path: &Path, text: impl Into<String>) -> Self {
        Self {
            path: Arc::from(path),
            text: text.into(),
        }
    }

    /// The path the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deserializes the file as TOML into `T`. Syntax errors, unknown keys
    /// and wrong types all become [`ConfigError::Parse`] with a location.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|err| ConfigError::Parse {
            at: self.locate(err.span().unwrap_or(0..0)),
            message: err.message().to_owned(),
        })
    }

    /// The location of a byte range of this file.
    pub fn locate(&self, span: Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = self.text[start..end].chars().count().max(1);
        Location(Arc::new(Spot {
            path: Arc::clone(&self.path),
            line,
            column,
            text: self.text[line_start..line_end]
                .trim_end_matches('\r')
                .to_owned(),
            width,
        }))
    }
}

/// A position in a configuration file, with the text of its line.
///
/// One pointer wide, so error enums that carry locations stay small and
/// `Result`s of them stay cheap to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(Arc<Spot>);

#[derive(Debug, PartialEq, Eq)]
struct Spot {
    path: Arc<Path>,
    line: usize,
    column: usize,
    text: String,
    width: usize,
}

impl Location {
    /// A location that names a file but no position in it (a file that could
    /// not be read, or a value that was left out).
    pub fn file(path: &Path) -> Self {
        Self(Arc::new(Spot {
            path: Arc::from(path),
            line: 0,
            column: 0,
            text: String::new(),
            width: 0,
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// 1-based line; 0 when the location names only the file.
    pub fn line(&self) -> usize {
        self.0.line
    }

    /// 1-based column, in characters.
    pub fn column(&self) -> usize {
        self.0.column
    }

    /// The line's text with a caret under the value, in the style of
    /// rustc; empty when the location names only the file.
    pub fn snippet(&self) -> String {
        if self.0.line == 0 {
            return String::new();
        }
        let number = self.0.line.to_string();
        let pad = " ".repeat(number.len());
        format!(
            "{pad} |\n{number} | {}\n{pad} | {}{}\n",
            self.0.text,
            " ".repeat(self.0.column - 1),
            "^".repeat(self.0.width),
        )
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.line == 0 {
            write!(f, "{}", self.0.path.display())
        } else {
            write!(
                f,
                "{}:{}:{}",
                self.0.path.display(),
                self.0.line,
                self.0.column
            )
        }
    }
}

/// Returns the known name closest to `wanted`, if one is close enough to be a
/// likely typo (edit distance at most a third of the name's length).
pub fn suggest<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (wanted.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|name| {
            (
                edit_distance(&wanted.to_lowercase(), &name.to_lowercase()),
                name,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sut(text: &str) -> SourceFile {
        SourceFile::from_text(Path::new("t.toml"), text)
    }

    #[test]
    fn locate_gives_line_and_column_of_a_span() {
        let file = sut("a = 1\nname = \"x\"\n");
        let at = file.locate(13..16);
        assert_eq!((at.line(), at.column()), (2, 8));
        assert_eq!(at.to_string(), "t.toml:2:8");
        assert!(at.snippet().contains("2 | name = \"x\"\n  |        ^^^\n"));
    }

    #[test]
    fn parse_error_names_line_of_unknown_key() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[allow(dead_code)]
            a: u32,
        }
        let err = sut("a = 1\nbogus = 2\n").parse::<Raw>().unwrap_err();
        let ConfigError::Parse { at, message } = err else {
            panic!("expected a parse error");
        };
        assert_eq!(at.line(), 2);
        assert!(message.contains("unknown field `bogus`"), "{message}");
    }

    #[test]
    fn suggest_finds_a_close_name_and_rejects_a_distant_one() {
        let known = ["ModelManagerSuite", "STTService"];
        assert_eq!(
            suggest("ModelManagerSuit", known),
            Some("ModelManagerSuite")
        );
        assert_eq!(suggest("Nothing", known), None);
    }
}
