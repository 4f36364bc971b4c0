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

/// Append `bytes` as a string literal (`'...'`; [`Strings`] says how it stays binary).
/// Escaped as
/// `mysql_real_escape_string` does: no quote, backslash, line end, NUL or Ctrl-Z stays
/// raw, so that the literal is one line and means the same bytes to any reader that
/// takes backslash escapes (the preamble's `sql_mode` has no `NO_BACKSLASH_ESCAPES`).
fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 10);
    out.push(b'\'');
    // Raw from `start` up to the byte looked at; eight bytes at a time are passed over
    // when none may need a look (most text has no byte to escape).
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + 8).min(bytes.len());
        if let Ok(word) = <[u8; 8]>::try_from(&bytes[at..end])
            && !may_need_escape(u64::from_ne_bytes(word))
        {
            at = end;
            continue;
        }
        for i in at..end {
            let escaped = match bytes[i] {
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
        at = end;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

/// Whether any of the eight bytes of `word` may be one [`push_string`] escapes: a quote,
/// a backslash or a byte below 0x1b (NUL, line ends, Ctrl-Z and other control bytes,
/// which are looked at one by one).
fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of x below n (n at most 0x80) leaves its high bit in (x - n) & !x.
    let any_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH_BITS != 0;
    any_below(word, 0x1b)
        || any_below(word ^ (ONES * u64::from(b'\'')), 1)
        || any_below(word ^ (ONES * u64::from(b'\\')), 1)
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

/// How a data artifact writes strings; the stored bytes either way, which the column
/// takes byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// Plain literals under `SET NAMES binary` (as mydumper writes them): no character
    /// set for the server to look up at every value. Only where every identifier of the
    /// artifact is ASCII: the server reads identifiers in the client's character set,
    /// and MySQL 8 converts them from binary a byte at a time, which would turn a utf8mb4
    /// name into another (MariaDB 10.11 copies the bytes).
    Binary,
    /// `_binary'...'` under `SET NAMES utf8mb4`.
    Introduced,
}

impl Strings {
    /// The form for an artifact whose statements name these tables and columns.
    pub fn for_names<'a>(mut names: impl Iterator<Item = &'a str>) -> Self {
        if names.all(|name| name.is_ascii()) { Strings::Binary } else { Strings::Introduced }
    }

    /// What the artifact starts with.
    pub fn preamble(self) -> &'static str {
        match self {
            Strings::Binary => concat!("SET NAMES binary;\n", settings!()),
            Strings::Introduced => PREAMBLE,
        }
    }

    /// Append `bytes` as a literal of this form.
    pub fn push(self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self == Strings::Introduced {
            out.extend_from_slice(b"_binary");
        }
        push_string(out, bytes);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The escapes one byte at a time, as `mysql_real_escape_string`.
    fn escaped_bytewise(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![b'\''];
        for &byte in bytes {
            match byte {
                0 => out.extend_from_slice(b"\\0"),
                b'\'' => out.extend_from_slice(b"\\'"),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                0x1a => out.extend_from_slice(b"\\Z"),
                other => out.push(other),
            }
        }
        out.push(b'\'');
        out
    }

    #[test]
    fn strings_are_plain_under_binary_only_where_every_name_is_ascii() {
        assert_eq!(Strings::for_names(["orders", "id", "note"].into_iter()), Strings::Binary);
        assert_eq!(Strings::for_names(["orders", "naïve"].into_iter()), Strings::Introduced);
        assert!(Strings::Binary.preamble().starts_with("SET NAMES binary;\n"));
        assert!(Strings::Introduced.preamble().starts_with("SET NAMES utf8mb4;\n"));
        let (mut plain, mut introduced) = (Vec::new(), Vec::new());
        Strings::Binary.push(&mut plain, b"it's");
        Strings::Introduced.push(&mut introduced, b"it's");
        assert_eq!((plain.as_slice(), introduced.as_slice()), (&b"'it\\'s'"[..], &b"_binary'it\\'s'"[..]));
    }

    #[test]
    fn every_byte_at_every_place_of_a_word_is_escaped_as_one_at_a_time() {
        for byte in 0..=255u8 {
            for place in 0..19 {
                // Alone in its word, and with a quote five places on (runs between escapes).
                for neighbour in [None, Some((place + 5) % 19)] {
                    let mut bytes = vec![b'a'; 19];
                    bytes[place] = byte;
                    if let Some(neighbour) = neighbour {
                        bytes[neighbour] = b'\'';
                    }
                    let mut out = b"x".to_vec();
                    push_string(&mut out, &bytes);
                    assert_eq!(out[1..], escaped_bytewise(&bytes), "byte {byte:#04x} at {place}, {neighbour:?}");
                }
            }
        }
        for bytes in
            [&b""[..], b"'", b"plain text, no escapes at all", "ünïcödé 😀".as_bytes(), b"\x1b\x1c\x7f\x80\xff"]
        {
            let mut out = Vec::new();
            push_string(&mut out, bytes);
            assert_eq!(out, escaped_bytewise(bytes));
        }
    }
}
