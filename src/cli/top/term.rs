//! The terminal while `pinwheel top` runs: raw mode and the alternate
//! screen on entry, and put back on every way out: a normal return, an
//! error, a panic (ratatui's panic hook restores it before the message is
//! printed, so the message is readable; with `panic = "abort"` the hook
//! still runs), and SIGTERM or SIGINT, which are blocked and read from a
//! signalfd by the loop so they end it like `q`.

use std::time::Duration;

use ratatui::DefaultTerminal;

use crate::daemon::signals::Signals;
use crate::error::DaemonError;

/// The terminal in raw mode on the alternate screen, and the signals
/// that end the loop. Dropping it restores the terminal.
#[derive(Debug)]
pub struct Screen {
    /// The ratatui terminal.
    pub terminal: DefaultTerminal,
    signals: Signals,
}

impl Screen {
    /// Blocks SIGTERM and SIGINT (before any thread is started, so every
    /// thread inherits the mask) and takes over the terminal.
    pub fn enter() -> Result<Screen, DaemonError> {
        let signals = Signals::block().map_err(|source| DaemonError::Signals { source })?;
        let terminal = ratatui::try_init().map_err(|err| DaemonError::Usage {
            message: format!("pinwheel top needs a terminal: {err}"),
        })?;
        Ok(Screen { terminal, signals })
    }

    /// Whether SIGTERM or SIGINT arrived.
    pub fn signalled(&mut self) -> bool {
        matches!(self.signals.wait(Duration::ZERO), Ok(Some(_)))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal refuses; the shell's
        // `reset` would be the operator's next step.
        let _ = self.terminal.show_cursor();
        let _ = ratatui::try_restore();
    }
}
