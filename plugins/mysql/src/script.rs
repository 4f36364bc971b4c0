//! The SQL the backup writes and the restore reads back: identifiers and values quoted
//! so that the `mariadb`/`mysql` client replays the artifacts alone, and a statement
//! splitter that reads them the way that client does (quotes, comments, `DELIMITER`).

use std::borrow::Cow;
use std::io::{self, BufRead};

/// `name` as a quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The name [`ident`] quoted, if `quoted` is exactly one quoted identifier.
pub fn unquote_ident(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('`')?.strip_suffix('`')?;
    // Inside, every backquote is doubled.
    let name = inner.replace("``", "`");
    (!name.is_empty() && ident(&name) == quoted).then_some(name)
}

/// `statement` without its `DEFINER=` clause, if it is a `CREATE` of a view, routine,
/// trigger or event as `SHOW CREATE` prints it (`CREATE [OR REPLACE] [ALGORITHM=...]
/// DEFINER=`user`@`host` ...`): the server then makes the current user its definer.
/// Any other statement comes back as it is.
pub fn without_definer(statement: &[u8]) -> Cow<'_, [u8]> {
    let at_word = |at: usize, word: &[u8]| {
        statement.len() >= at + word.len() && statement[at..at + word.len()].eq_ignore_ascii_case(word)
    };
    let spaces = |mut at: usize| {
        while statement.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    if !at_word(0, b"CREATE ") {
        return Cow::Borrowed(statement);
    }
    let mut at = spaces(6);
    if at_word(at, b"OR REPLACE ") {
        at = spaces(at + 10);
    }
    if at_word(at, b"ALGORITHM=") {
        while statement.get(at).is_some_and(|b| !b.is_ascii_whitespace()) {
            at += 1;
        }
        at = spaces(at);
    }
    if !at_word(at, b"DEFINER=") {
        return Cow::Borrowed(statement);
    }
    let start = at;
    let Some(mut end) = account_part(statement, at + 8) else {
        return Cow::Borrowed(statement);
    };
    if statement.get(end) == Some(&b'@') {
        match account_part(statement, end + 1) {
            Some(host_end) => end = host_end,
            None => return Cow::Borrowed(statement),
        }
    }
    let mut stripped = statement[..start].to_vec();
    stripped.extend_from_slice(&statement[spaces(end)..]);
    Cow::Owned(stripped)
}

/// Where the user or host of an account that starts at `at` ends: a quoted name (`` ` ``,
/// `'`, or `"` as `ANSI_QUOTES` prints them; the quote doubled inside) or a bare word
/// such as `CURRENT_USER()`.
fn account_part(statement: &[u8], at: usize) -> Option<usize> {
    match statement.get(at)? {
        &quote @ (b'`' | b'\'' | b'"') => {
            let mut i = at + 1;
            loop {
                match *statement.get(i)? {
                    b if b == quote && statement.get(i + 1) == Some(&quote) => i += 2,
                    b if b == quote => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        _ => {
            let end = statement[at..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'(' | b')')))
                .map_or(statement.len(), |length| at + length);
            (end > at).then_some(end)
        }
    }
}

/// `text` as a string literal that means the same under any `sql_mode`.
pub fn literal(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            // NO_BACKSLASH_ESCAPES would read a backslash literally; a hex escape is
            // not needed because none of the text this quotes comes from table data.
            '\\' => quoted.push_str("\\\\"),
            _ => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// Append `bytes` as a hexadecimal literal (`0x...`, or `''` when empty).
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if bytes.is_empty() {
        out.extend_from_slice(b"''");
        return;
    }
    let start = out.len() + 2;
    out.extend_from_slice(b"0x");
    out.resize(start + bytes.len() * 2, 0);
    for (pair, byte) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 15)];
    }
}

/// Append `bytes` as a string literal (`'...'`), which the data artifacts' `SET NAMES
/// binary` makes a binary string: the column takes it byte for byte, without a
/// `_binary` introducer for the server to look up at every value. Escaped as
/// `mysql_real_escape_string` does: no quote, backslash, line end, NUL or Ctrl-Z stays
/// raw, so that the literal is one line and means the same bytes to any reader that
/// takes backslash escapes (the preamble's `sql_mode` has no `NO_BACKSLASH_ESCAPES`).
pub fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 10);
    out.push(b'\'');
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped = match byte {
            0 => b'0',
            b'\'' => b'\'',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            0x1a => b'Z',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

/// The session settings every artifact has after its character set, so that each
/// replays alone: values read back as written (UTC timestamps, zero dates, explicit zeros
/// in AUTO_INCREMENT columns) and no check that the order of the artifacts would trip.
macro_rules! settings {
    () => {
        "SET time_zone = '+00:00';
SET foreign_key_checks = 0;
SET unique_checks = 0;
SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO';
"
    };
}

/// What the schema, `post.sql` and `users.sql` start with: definitions are utf8mb4 text.
pub const PREAMBLE: &str = concat!("SET NAMES utf8mb4;\n", settings!());

/// What data artifacts start with: their string literals are the stored bytes
/// ([`push_string`]). Identifiers are taken byte for byte, so utf8mb4 names stay as
/// they are.
pub const DATA_PREAMBLE: &str = concat!("SET NAMES binary;\n", settings!());

/// Reads the statements of a script one at a time, as the `mariadb` client splits them:
/// at the current delimiter outside quotes and comments, with `DELIMITER x` lines
/// changing it. Executable comments (`/*! ... */`) are kept: the server runs them.
#[derive(Debug)]
pub struct Statements<R> {
    input: R,
    delimiter: Vec<u8>,
    /// The line being split, and how far.
    line: Vec<u8>,
    at: usize,
}

impl<R: BufRead> Statements<R> {
    pub fn new(input: R) -> Self {
        Statements { input, delimiter: b";".to_vec(), line: Vec::new(), at: 0 }
    }

    /// The next statement without its delimiter, or `None` at the end.
    pub fn next_statement(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut statement = Vec::new();
        let mut quote: Option<u8> = None;
        let mut block_comment = false;
        loop {
            if self.at >= self.line.len() {
                self.line.clear();
                self.at = 0;
                if self.input.read_until(b'\n', &mut self.line)? == 0 {
                    if quote.is_some() || block_comment {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the script ends inside a quote or comment",
                        ));
                    }
                    let rest = trim(&statement);
                    return Ok((!rest.is_empty()).then(|| rest.to_vec()));
                }
                if quote.is_none()
                    && !block_comment
                    && trim(&statement).is_empty()
                    && let Some(rest) = strip_prefix_ignore_case(trim(&self.line), b"DELIMITER ")
                {
                    self.delimiter = trim(rest).to_vec();
                    self.at = self.line.len();
                    statement.clear();
                    continue;
                }
            }
            let line = &self.line;
            while self.at < line.len() {
                let i = self.at;
                let byte = line[i];
                if block_comment {
                    if line[i..].starts_with(b"*/") {
                        block_comment = false;
                        self.at += 2;
                    } else {
                        self.at += 1;
                    }
                    continue;
                }
                if let Some(q) = quote {
                    // Copy the quoted run up to its next escape or quote at once: most
                    // of a data artifact is inside quotes.
                    let escapes = q != b'`';
                    let run = line[i..]
                        .iter()
                        .position(|&b| b == q || (escapes && b == b'\\'))
                        .map_or(line.len(), |at| i + at);
                    statement.extend_from_slice(&line[i..run]);
                    self.at = run;
                    if run == line.len() {
                        continue;
                    }
                    statement.push(line[run]);
                    self.at += 1;
                    if line[run] == q {
                        quote = None;
                    } else if run + 1 < line.len() {
                        statement.push(line[run + 1]);
                        self.at += 1;
                    }
                    continue;
                }
                if line[i..].starts_with(&self.delimiter) {
                    self.at += self.delimiter.len();
                    return Ok(Some(trim(&statement).to_vec()));
                }
                match byte {
                    b'\'' | b'"' | b'`' => quote = Some(byte),
                    b'#' => {
                        self.at = line.len();
                        break;
                    }
                    b'-' if line[i..].starts_with(b"-- ") || line[i..].starts_with(b"--\n") => {
                        self.at = line.len();
                        break;
                    }
                    b'/' if line[i..].starts_with(b"/*") && !line[i..].starts_with(b"/*!") => {
                        block_comment = true;
                        self.at += 2;
                        continue;
                    }
                    _ => {}
                }
                statement.push(byte);
                self.at += 1;
            }
            // A line end inside a statement is part of it (it may be inside a quote);
            // a comment cut the line before its own end.
            if (quote.is_some() || !statement.is_empty()) && !statement.ends_with(b"\n") {
                statement.push(b'\n');
            }
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |end| end + 1);
    &bytes[start..end.max(start)]
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &bytes[prefix.len()..])
}
