//! The filtered prompt's line editor: bytes from a raw terminal in, edits out. Left/right,
//! Home/End, backspace, Delete, Ctrl-A/E/U/K/W, history up/down, Ctrl-C, Ctrl-D, Enter.
//! Nothing typed here reaches a pod until the whole line is submitted and decided.

/// What a byte did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Nothing visible changed.
    Nothing,
    /// The line changed: redraw it.
    Redraw,
    /// A character was typed at the end of the line: show just it (a redraw per keystroke
    /// would write the whole line again each time, to the terminal and the recording).
    Echo(char),
    /// Enter: the line (also added to history when not empty).
    Submit(String),
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D on an empty line.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EscState {
    Plain,
    Escape,
    Csi,
    Ss3,
}

/// Longest line the editor holds (the policy parser refuses longer ones anyway).
pub const MAX_LINE: usize = 8192;

/// The editor state.
#[derive(Debug)]
pub struct Editor {
    line: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    browsing: Option<usize>,
    draft: Vec<char>,
    esc: EscState,
    csi: Vec<u8>,
    utf8: Vec<u8>,
}

impl Default for Editor {
    fn default() -> Self {
        Editor {
            line: Vec::new(),
            cursor: 0,
            history: Vec::new(),
            browsing: None,
            draft: Vec::new(),
            esc: EscState::Plain,
            csi: Vec::new(),
            utf8: Vec::new(),
        }
    }
}

impl Editor {
    /// The current line.
    pub fn line(&self) -> String {
        self.line.iter().collect()
    }

    /// Feeds one byte.
    pub fn feed(&mut self, b: u8) -> Edit {
        match self.esc {
            EscState::Escape => {
                self.esc = match b {
                    b'[' => EscState::Csi,
                    b'O' => EscState::Ss3,
                    _ => EscState::Plain,
                };
                self.csi.clear();
                return Edit::Nothing;
            }
            EscState::Csi | EscState::Ss3 => {
                if (0x40..=0x7e).contains(&b) {
                    self.esc = EscState::Plain;
                    let params = std::mem::take(&mut self.csi);
                    return self.escape(b, &params);
                }
                if self.csi.len() < 16 {
                    self.csi.push(b);
                }
                return Edit::Nothing;
            }
            EscState::Plain => {}
        }
        if !self.utf8.is_empty() || b >= 0x80 {
            self.utf8.push(b);
            match std::str::from_utf8(&self.utf8) {
                Ok(s) => {
                    let chars: Vec<char> = s.chars().collect();
                    self.utf8.clear();
                    let mut e = Edit::Nothing;
                    for c in chars {
                        e = self.insert(c);
                    }
                    return e;
                }
                Err(err) if err.error_len().is_none() && self.utf8.len() < 4 => {
                    return Edit::Nothing;
                }
                Err(_) => {
                    self.utf8.clear();
                    return Edit::Nothing;
                }
            }
        }
        match b {
            0x1b => {
                self.esc = EscState::Escape;
                Edit::Nothing
            }
            b'\r' | b'\n' => {
                let line = self.line();
                if !line.trim().is_empty() && self.history.last() != Some(&line) {
                    self.history.push(line.clone());
                }
                self.line.clear();
                self.cursor = 0;
                self.browsing = None;
                Edit::Submit(line)
            }
            0x03 => {
                self.line.clear();
                self.cursor = 0;
                self.browsing = None;
                Edit::Interrupt
            }
            0x04 if self.line.is_empty() => Edit::Eof,
            0x04 => self.delete_at_cursor(),
            0x01 => self.move_to(0),
            0x05 => self.move_to(self.line.len()),
            0x02 => self.move_to(self.cursor.saturating_sub(1)),
            0x06 => self.move_to((self.cursor + 1).min(self.line.len())),
            0x7f | 0x08 => {
                if self.cursor == 0 {
                    return Edit::Nothing;
                }
                self.cursor -= 1;
                self.line.remove(self.cursor);
                Edit::Redraw
            }
            0x15 => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
                Edit::Redraw
            }
            0x0b => {
                self.line.truncate(self.cursor);
                Edit::Redraw
            }
            0x17 => {
                let mut start = self.cursor;
                let before = |i: usize| i.checked_sub(1).and_then(|j| self.line.get(j)).copied();
                while before(start) == Some(' ') {
                    start -= 1;
                }
                while before(start).is_some_and(|c| c != ' ') {
                    start -= 1;
                }
                self.line.drain(start..self.cursor);
                self.cursor = start;
                Edit::Redraw
            }
            0x0c => Edit::Redraw,
            b if b < 0x20 => Edit::Nothing,
            b => self.insert(char::from(b)),
        }
    }

    fn insert(&mut self, c: char) -> Edit {
        if self.line.len() >= MAX_LINE || c.is_control() {
            return Edit::Nothing;
        }
        let at_end = self.cursor == self.line.len();
        self.line.insert(self.cursor, c);
        self.cursor += 1;
        if at_end { Edit::Echo(c) } else { Edit::Redraw }
    }

    fn delete_at_cursor(&mut self) -> Edit {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
            Edit::Redraw
        } else {
            Edit::Nothing
        }
    }

    fn move_to(&mut self, to: usize) -> Edit {
        if to == self.cursor {
            return Edit::Nothing;
        }
        self.cursor = to;
        Edit::Redraw
    }

    fn escape(&mut self, fin: u8, params: &[u8]) -> Edit {
        match (fin, params) {
            (b'A', _) => self.history_step(true),
            (b'B', _) => self.history_step(false),
            (b'C', _) => self.move_to((self.cursor + 1).min(self.line.len())),
            (b'D', _) => self.move_to(self.cursor.saturating_sub(1)),
            (b'H', _) | (b'~', b"1") | (b'~', b"7") => self.move_to(0),
            (b'F', _) | (b'~', b"4") | (b'~', b"8") => self.move_to(self.line.len()),
            (b'~', b"3") => self.delete_at_cursor(),
            _ => Edit::Nothing,
        }
    }

    fn history_step(&mut self, back: bool) -> Edit {
        if self.history.is_empty() {
            return Edit::Nothing;
        }
        let next = match (self.browsing, back) {
            (None, true) => {
                self.draft = self.line.clone();
                Some(self.history.len() - 1)
            }
            (None, false) => return Edit::Nothing,
            (Some(0), true) => Some(0),
            (Some(i), true) => Some(i - 1),
            (Some(i), false) if i + 1 < self.history.len() => Some(i + 1),
            (Some(_), false) => None,
        };
        self.browsing = next;
        self.line = match next {
            Some(i) => self
                .history
                .get(i)
                .map(|h| h.chars().collect())
                .unwrap_or_default(),
            None => std::mem::take(&mut self.draft),
        };
        self.cursor = self.line.len();
        Edit::Redraw
    }

    /// The bytes that redraw the line after `prompt` on a terminal: carriage return, prompt,
    /// line, clear to end of line, cursor back to its place.
    pub fn render(&self, prompt: &str) -> Vec<u8> {
        let mut out = format!("\r{prompt}{}\x1b[K", self.line());
        let back = self.line.len() - self.cursor;
        if back > 0 {
            out.push_str(&format!("\x1b[{back}D"));
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(e: &mut Editor, bytes: &[u8]) -> Vec<Edit> {
        bytes
            .iter()
            .map(|b| e.feed(*b))
            .filter(|x| *x != Edit::Nothing && *x != Edit::Redraw && !matches!(x, Edit::Echo(_)))
            .collect()
    }

    #[test]
    fn editing_keys() {
        let mut e = Editor::default();
        // type, move left, insert, Enter
        assert_eq!(
            feed(&mut e, b"ps ax\x1b[Du\r"),
            vec![Edit::Submit("ps aux".into())]
        );
        // Ctrl-A, Ctrl-E, backspace, Ctrl-W, Ctrl-U
        feed(&mut e, b"tail -n 5 /var/log/app.logX\x7f");
        assert_eq!(e.line(), "tail -n 5 /var/log/app.log");
        feed(&mut e, b"\x17");
        assert_eq!(e.line(), "tail -n 5 ");
        feed(&mut e, b"\x01#\x05!");
        assert_eq!(e.line(), "#tail -n 5 !");
        feed(&mut e, b"\x15");
        assert_eq!(e.line(), "");
        // history: up recalls the last line, up again the one before, down comes back
        feed(&mut e, b"date\r");
        feed(&mut e, b"\x1b[A");
        assert_eq!(e.line(), "date");
        feed(&mut e, b"\x1b[A");
        assert_eq!(e.line(), "ps aux");
        feed(&mut e, b"\x1b[B\x1b[B");
        assert_eq!(e.line(), "");
        // Ctrl-C clears, Ctrl-D on an empty line is EOF, UTF-8 is kept whole
        assert_eq!(feed(&mut e, b"sleep 3\x03"), vec![Edit::Interrupt]);
        assert_eq!(e.line(), "");
        feed(&mut e, "é".as_bytes());
        assert_eq!(e.line(), "é");
        feed(&mut e, b"\x7f");
        assert_eq!(feed(&mut e, b"\x04"), vec![Edit::Eof]);
        // control characters other than the editing keys are dropped, never inserted
        feed(&mut e, b"a\x16\x00b");
        assert_eq!(e.line(), "ab");
        assert_eq!(e.render("$ "), b"\r$ ab\x1b[K".to_vec());
        feed(&mut e, b"\x1b[D");
        assert_eq!(e.render("$ "), b"\r$ ab\x1b[K\x1b[1D".to_vec());
    }
}
