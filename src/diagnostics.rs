//! Errors and warnings about rule and reply files, pointing at file:line:col.
//!
//! Loading collects every problem it finds instead of stopping at the first, so an ops person
//! fixes a whole edit in one round. Each problem is a [`Diagnostic`]; [`Sources`] keeps the file
//! texts so a diagnostic can be rendered the way rustc renders one, or as a one-line log entry.

use std::fmt;
use std::io::IsTerminal;
use std::ops::Range;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic as Report, Label};
use codespan_reporting::files::{Files, SimpleFiles};
use codespan_reporting::term::{self, termcolor};

/// Which of the loaded files a diagnostic points into.
pub type FileId = usize;

/// How bad a problem is: errors stop a rule set from loading, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: FileId,
    pub span: Range<usize>,
    /// The rule (or reply key) the problem belongs to, when there is one.
    pub subject: Option<String>,
    pub message: String,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file,
            span,
            subject: None,
            message: message.into(),
            notes: Vec::new(),
        }
    }

    pub fn warning(file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, span, message)
        }
    }

    pub fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// The texts of every file that was read, so diagnostics can quote them.
#[derive(Debug, Clone)]
pub struct Sources {
    files: SimpleFiles<String, String>,
    paths: Vec<PathBuf>,
}

/// A place in a file, counted from 1 the way editors count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            files: SimpleFiles::new(),
            paths: Vec::new(),
        }
    }
}

impl Sources {
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        self.paths.push(path.to_path_buf());
        self.files.add(path.display().to_string(), text)
    }

    pub fn text(&self, file: FileId) -> &str {
        self.files
            .get(file)
            .map(|f| f.source().as_str())
            .unwrap_or("")
    }

    pub fn path(&self, file: FileId) -> &Path {
        self.paths
            .get(file)
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("?"))
    }

    /// The line and column (1-based, in characters) where `offset` lies.
    pub fn location(&self, file: FileId, offset: usize) -> Location {
        let (line, column) = match self.files.location(file, offset) {
            Ok(loc) => (loc.line_number, loc.column_number),
            Err(_) => (1, 1),
        };
        Location {
            path: self.path(file).to_path_buf(),
            line,
            column,
        }
    }

    /// `path:line:col: error[subject]: message`, for logs and for tests.
    pub fn one_line(&self, diagnostic: &Diagnostic) -> String {
        let location = if self.is_about_whole(diagnostic) {
            self.path(diagnostic.file).display().to_string()
        } else {
            self.location(diagnostic.file, diagnostic.span.start)
                .to_string()
        };
        let subject = diagnostic
            .subject
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        format!(
            "{location}: {}{subject}: {}",
            diagnostic.severity, diagnostic.message
        )
    }

    /// Whether `diagnostic` is about a whole file or directory with no text to point into.
    fn is_about_whole(&self, diagnostic: &Diagnostic) -> bool {
        diagnostic.span.is_empty() && self.text(diagnostic.file).is_empty()
    }

    /// Renders diagnostics the way rustc does, with the offending lines quoted.
    pub fn render(&self, diagnostics: &[Diagnostic], colour: bool) -> String {
        let mut buffer = if colour {
            termcolor::Buffer::ansi()
        } else {
            termcolor::Buffer::no_color()
        };
        let config = term::Config::default();
        for diagnostic in diagnostics {
            let report = match diagnostic.severity {
                Severity::Error => Report::error(),
                Severity::Warning => Report::warning(),
            };
            let label_text = diagnostic
                .subject
                .as_deref()
                .map(|s| format!("in `{s}`"))
                .unwrap_or_default();
            // A problem with a whole file or directory that has no text (one that cannot be
            // read) has no line to quote: the message names it instead.
            let (message, labels) = if self.is_about_whole(diagnostic) {
                let path = self.path(diagnostic.file).display().to_string();
                let message = if diagnostic.message.contains(&path) {
                    diagnostic.message.clone()
                } else {
                    format!("{path}: {}", diagnostic.message)
                };
                (message, Vec::new())
            } else {
                let label = Label::primary(diagnostic.file, diagnostic.span.clone())
                    .with_message(label_text);
                (diagnostic.message.clone(), vec![label])
            };
            let report = report
                .with_message(message)
                .with_labels(labels)
                .with_notes(diagnostic.notes.clone());
            if term::emit(&mut buffer, &config, &self.files, &report).is_err() {
                // The span is out of range (it should not be); fall back to the plain form.
                buffer_line(&mut buffer, &self.one_line(diagnostic));
            }
        }
        String::from_utf8_lossy(buffer.as_slice()).into_owned()
    }
}

fn buffer_line(buffer: &mut termcolor::Buffer, line: &str) {
    use std::io::Write;
    let _ = writeln!(buffer, "{line}");
}

/// Whether stderr is a terminal that should get colours.
pub fn stderr_wants_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
