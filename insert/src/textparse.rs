//! Byte-cursor steps shared by the line-oriented text parsers (Prometheus
//! text / OpenMetrics and Influx line protocol): both read a body line by
//! line, with `\n` or `\r\n` line ends and blanks that are spaces or tabs.

/// A position in a body being parsed; the provided steps move it.
pub(crate) trait LineCursor {
    /// The whole body.
    fn bytes(&self) -> &[u8];
    /// The current offset into [`LineCursor::bytes`].
    fn pos(&self) -> usize;
    /// Moves the offset one byte on.
    fn advance(&mut self);

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos()).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.advance();
        }
    }

    fn at_line_end(&self) -> bool {
        match self.peek() {
            None | Some(b'\n') => true,
            Some(b'\r') => matches!(self.bytes().get(self.pos() + 1), None | Some(b'\n')),
            _ => false,
        }
    }

    /// Consumes the end of the line (`\r\n`, `\n` or the end of the body).
    fn finish_line(&mut self) {
        if self.peek() == Some(b'\r') {
            self.advance();
        }
        if self.peek() == Some(b'\n') {
            self.advance();
        }
    }
}
