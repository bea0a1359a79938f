//! Reading a secret's value: from standard input only, never from the command line (where
//! `ps`, shell history and CI logs would keep it).
//!
//! On a terminal the value is typed with echo off (termios through rustix) and ends at the
//! first line break; from a pipe or file everything is read and one trailing line break
//! (`\n` or `\r\n`) is dropped, so `echo "$TOKEN" | dronectl secret set …` stores the token.

use std::io::{BufRead, Read};

use crate::exit::UsageError;

/// The largest value accepted (Kubernetes Secrets are limited to 1 MiB in total).
pub const MAX_VALUE: usize = 1 << 20;

/// Where the value comes from.
pub enum Source<R> {
    /// Standard input on a terminal: read one line with echo off.
    Terminal(R),
    /// A pipe or file: read to the end.
    Stream(R),
}

/// Standard input as a [`Source`]: a terminal when it is one.
pub fn stdin() -> Source<std::io::Stdin> {
    let stdin = std::io::stdin();
    if rustix::termios::isatty(&stdin) {
        Source::Terminal(stdin)
    } else {
        Source::Stream(stdin)
    }
}

/// Turns echo off on the terminal standard input is until dropped.
struct EchoOff {
    fd: std::io::Stdin,
    saved: rustix::termios::Termios,
}

impl EchoOff {
    fn new() -> std::io::Result<Self> {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let fd = std::io::stdin();
        let saved = tcgetattr(&fd)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&fd, OptionalActions::Flush, &quiet)?;
        Ok(EchoOff { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            &self.fd,
            rustix::termios::OptionalActions::Flush,
            &self.saved,
        );
    }
}

/// Reads a value from `source` (see the module documentation). An empty value is refused.
pub fn read_value<R: Read>(source: Source<R>) -> anyhow::Result<Vec<u8>> {
    let value = match source {
        Source::Terminal(r) => {
            let _echo = EchoOff::new()
                .map_err(|e| anyhow::anyhow!("cannot turn off echo on the terminal: {e}"))?;
            let mut line = Vec::new();
            std::io::BufReader::new(r)
                .take(MAX_VALUE as u64 + 2)
                .read_until(b'\n', &mut line)?;
            strip_newline(line)
        }
        Source::Stream(r) => read_stream(r)?,
    };
    check(value)
}

/// Reads a whole stream and drops one trailing line break.
pub fn read_stream(r: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut value = Vec::new();
    r.take(MAX_VALUE as u64 + 3).read_to_end(&mut value)?;
    check(strip_newline(value))
}

fn strip_newline(mut value: Vec<u8>) -> Vec<u8> {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    value
}

fn check(value: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if value.is_empty() {
        return Err(UsageError(
            "the value is empty: pipe it to standard input (e.g. `printf %s \"$VALUE\" | dronectl secret set …`) or type it when asked".into(),
        )
        .into());
    }
    if value.len() > MAX_VALUE {
        return Err(UsageError(format!(
            "the value is larger than {MAX_VALUE} bytes (the limit of a Kubernetes Secret)"
        ))
        .into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_line_break_is_dropped() {
        assert_eq!(read_stream(&b"s3cret\n"[..]).unwrap(), b"s3cret");
        assert_eq!(read_stream(&b"s3cret\r\n"[..]).unwrap(), b"s3cret");
        assert_eq!(read_stream(&b"s3cret\n\n"[..]).unwrap(), b"s3cret\n");
        assert_eq!(read_stream(&b"a b\nc"[..]).unwrap(), b"a b\nc");
        assert!(read_stream(&b"\n"[..]).is_err());
        assert!(read_stream(&b""[..]).is_err());
        assert!(read_stream(&vec![b'x'; MAX_VALUE + 1][..]).is_err());
    }
}
