//! Terminal safety of every text output: strings from hosts (process names, hostnames, file
//! paths, messages) may hold control characters that a terminal would obey (`ESC ] 0 ; …`
//! retitles the window, `ESC [ 2 J` clears it, a bidi override reorders what is shown).
//! [`escape_controls`] makes them visible instead; the tables and text renderers of this crate
//! use it, and both binaries route `print!`/`println!`/`eprint!`/`eprintln!` through
//! [`out`]/[`err`], so nothing printed as text can bypass it. JSON output is written exactly
//! (serde_json already escapes C0; the caller sets [`set_json`]).
//!
//! [`out`] and [`err`] also end the process quietly when the reader has gone (`| head`),
//! instead of panicking.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// True for a character a terminal may act on: C0 controls but newline and tab, DEL, C1
/// controls, and the bidirectional formatting characters.
pub fn is_unsafe(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `s` with every [`is_unsafe`] character written as a visible escape: `\x1b`, `\x7f`,
/// `\u{9b}`, `\u{202e}`. Borrowed when there is nothing to escape.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] of an owned string.
pub fn clean(s: String) -> String {
    match escape_controls(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Standard output carries JSON from now on: [`out`] writes it exactly.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

fn write_or_exit(mut w: impl std::io::Write, s: &str) {
    if let Err(e) = w.write_all(s.as_bytes()).and_then(|_| w.flush()) {
        // The reader has gone (`| head`) or the terminal is gone: nothing more can be shown,
        // so end quietly with the status a SIGPIPE death would give.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        std::process::exit(1);
    }
}

/// Writes to standard output (what the binaries' `print!`/`println!` do): escaped unless the
/// output is JSON.
pub fn out(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut s = args.to_string();
    if newline {
        s.push('\n');
    }
    if !JSON.load(Ordering::Relaxed) {
        s = clean(s);
    }
    write_or_exit(std::io::stdout().lock(), &s);
}

/// Writes to standard error (the binaries' `eprint!`/`eprintln!`), always escaped.
pub fn err(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut s = clean(args.to_string());
    if newline {
        s.push('\n');
    }
    write_or_exit(std::io::stderr().lock(), &s);
}

/// Resets SIGPIPE to its default action, so a command whose output is piped into a reader
/// that stops early (`| head`) ends quietly instead of failing on every write. Only for
/// short-lived client commands: daemons keep SIGPIPE ignored (their sockets report EPIPE).
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called at the start of main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A writer for text output that escapes control characters in what is written through it
/// (for code that writes tables with `writeln!` instead of `print!`).
pub struct SafeWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for SafeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(s) => self.0.write_all(escape_controls(s).as_bytes())?,
            Err(_) => {
                // Not whole UTF-8 (a split write): escape the ASCII controls byte by byte.
                for &b in buf {
                    if (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f {
                        write!(self.0, "\\x{b:02x}")?;
                    } else {
                        self.0.write_all(&[b])?;
                    }
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_c0_del_c1_and_bidi_and_keeps_the_rest() {
        let name = "nginx\u{1b}]0;x\u{7}\u{1b}[2J";
        assert_eq!(escape_controls(name), "nginx\\x1b]0;x\\x07\\x1b[2J");
        assert_eq!(escape_controls("a\u{7f}b\u{9b}c"), "a\\x7fb\\u{9b}c");
        assert_eq!(escape_controls("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(escape_controls("a\rb"), "a\\x0db");
        let plain = "数据库 db-01\tok\n";
        assert!(matches!(escape_controls(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn the_safe_writer_escapes_what_goes_through_it() {
        use std::io::Write;
        let mut w = SafeWriter(Vec::new());
        writeln!(w, "{:<8}|", "a\u{1b}[2J").unwrap();
        w.write_all(&[b'x', 0x1b, 0xc3]).unwrap();
        assert_eq!(w.0, b"a\\x1b[2J   |\nx\\x1b\xc3");
    }
}
