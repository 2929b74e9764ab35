//! The syntax of xl's configuration files (libxlu's parser, tools/libs/util/libxlu_cfg_y.y
//! and libxlu_cfg_l.l in the Xen tree; xl.cfg(5) "Syntax"): settings `KEY = VALUE`, ended by
//! a newline or `;`; a value is a number, a string in `"` or `'` quotes, or a list
//! `[ value, ... ]` that may span lines and end with a comma; `#` starts a comment.

use crate::error::{Error, Result};

/// A setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, unescaped.
    Str(String),
    /// A number as written (decimal, or hexadecimal with `0x`).
    Num(String),
    /// A list of strings and numbers.
    List(Vec<Value>),
}

/// One `KEY = VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The line it starts on (from 1).
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// The most items a list may have (a real config has a handful of disks and NICs).
const MAX_LIST: usize = 4096;

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    name: &'a str,
}

impl Lexer<'_> {
    fn err(&self, what: String) -> Error {
        Error::invalid(format!("line {}: {what}", self.line)).with_path(self.name)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips blanks and comments; newlines too when `newlines`.
    fn skip(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' if newlines => {
                    self.pos += 1;
                    self.line += 1;
                }
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        (self.pos > start && !self.s[start].is_ascii_digit())
            .then(|| String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn string(&mut self, quote: u8) -> Result<String> {
        let line = self.line;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                self.line = line;
                return Err(self.err("a string without its closing quote".into()));
            };
            self.pos += 1;
            match c {
                c if c == quote => break,
                b'\n' => {
                    self.line = line;
                    return Err(self.err("a string without its closing quote".into()));
                }
                b'\\' => {
                    let Some(e) = self.peek() else { continue };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("a string that is not UTF-8".into()))
    }

    fn scalar(&mut self) -> Result<Value> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => Ok(Value::Str(self.string(q)?)),
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.pos += 1;
                }
                let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                let ok = text.chars().all(|c| c.is_ascii_digit())
                    || text
                        .strip_prefix("0x")
                        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
                if ok {
                    Ok(Value::Num(text))
                } else {
                    Err(self.err(format!("'{text}' is not a number")))
                }
            }
            Some(c) => Err(self.err(format!(
                "expected a value (a number, a quoted string or a [list]), found '{}'",
                char::from(c).escape_default()
            ))),
            None => Err(self.err("expected a value, found the end of the file".into())),
        }
    }
}

/// Parses a whole configuration file (`name` names it in errors).
pub fn parse(bytes: &[u8], name: &str) -> Result<Vec<Setting>> {
    let mut lx = Lexer {
        s: bytes,
        pos: 0,
        line: 1,
        name,
    };
    let mut out = Vec::new();
    loop {
        lx.skip(true);
        let Some(c) = lx.peek() else { break };
        if c == b';' {
            lx.pos += 1;
            continue;
        }
        let line = lx.line;
        let Some(key) = lx.ident() else {
            return Err(lx.err(format!(
                "expected a setting name, found '{}'",
                char::from(c).escape_default()
            )));
        };
        lx.skip(false);
        if lx.peek() == Some(b'+') {
            return Err(lx.err(format!(
                "'{key} +=' (appending) is not supported: give the whole value"
            )));
        }
        if lx.peek() != Some(b'=') {
            return Err(lx.err(format!("expected '=' after '{key}'")));
        }
        lx.pos += 1;
        lx.skip(false);
        let value = if lx.peek() == Some(b'[') {
            lx.pos += 1;
            let mut items = Vec::new();
            loop {
                lx.skip(true);
                if lx.peek() == Some(b']') {
                    lx.pos += 1;
                    break;
                }
                if items.len() >= MAX_LIST {
                    return Err(lx.err(format!("a list of more than {MAX_LIST} items")));
                }
                if lx.peek().is_none() {
                    lx.line = line;
                    return Err(lx.err(format!("the list of '{key}' has no closing ']'")));
                }
                items.push(lx.scalar()?);
                lx.skip(true);
                match lx.peek() {
                    Some(b',') => lx.pos += 1,
                    Some(b']') => {}
                    None => {
                        lx.line = line;
                        return Err(lx.err(format!("the list of '{key}' has no closing ']'")));
                    }
                    _ => {
                        return Err(lx.err(format!("expected ',' or ']' in the list of '{key}'")));
                    }
                }
            }
            Value::List(items)
        } else {
            lx.scalar()?
        };
        lx.skip(false);
        match lx.peek() {
            None | Some(b'\n') | Some(b';') => {}
            Some(c) => {
                return Err(lx.err(format!(
                    "unexpected '{}' after the value of '{key}'",
                    char::from(c).escape_default()
                )));
            }
        }
        out.push(Setting { key, line, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_span_lines_and_strings_take_either_quote() {
        let s = parse(
            b"name = \"a\" ; vcpus=2\ndisk = [ 'x,raw,xvda,rw',\n  \"y\", ]\n# c\n",
            "t.cfg",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].value, Value::Num("2".into()));
        assert_eq!(
            s[2].value,
            Value::List(vec![
                Value::Str("x,raw,xvda,rw".into()),
                Value::Str("y".into())
            ])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(b"name = \"a\"\nmemory = \"12\nvcpus = 1\n", "t.cfg").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.cfg: line 2: a string without its closing quote"
        );
        let e = parse(b"\n\ndisk = [ 'a'\n", "t.cfg").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = parse(b"name = a\n", "t.cfg").unwrap_err();
        assert!(e.to_string().contains("line 1: expected a value"), "{e}");
    }
}
