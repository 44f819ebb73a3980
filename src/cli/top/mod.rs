//! `pinwheel top`: a live view of a running daemon over its admin API,
//! refreshed every second, in the terminal (ratatui on crossterm).
//!
//! * [`app`]: the state and the keys (pure: tested without a terminal);
//! * [`ui`]: drawing a frame from it, at 80x24 and larger;
//! * [`fetch`]: the refresh thread, so the keys never wait for the daemon;
//! * [`term`]: raw mode and the alternate screen, restored on every way
//!   out (quit, error, panic, SIGTERM, SIGINT).
//!
//! It reads what `pinwheel status` reads (the [`crate::observe::api`]
//! types) plus the plan and the cluster; `p` pins or unpins a model with
//! the admin token, through the same `POST` endpoints as `pinwheel gpu`.

mod app;
mod fetch;
mod term;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{channel, sync_channel};
use std::time::Duration;

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use self::app::{Action, App};
use self::term::Screen;
use self::ui::Palette;
use super::client::AdminClient;
use crate::error::DaemonError;
use crate::observe::admin::{Command, DEFAULT_TOKEN_FILE};
use crate::observe::api::ModelAnswer;
use crate::topology::DEFAULT_ADMIN_ADDR;

/// Longest the loop waits for a key before looking for a refresh or a
/// signal.
const TICK: Duration = Duration::from_millis(100);

/// `pinwheel top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The daemon's admin API.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin: SocketAddr,
    /// The admin token file the pin dialog offers first.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,
}

pub(super) fn run(args: &TopArgs) -> Result<(), DaemonError> {
    let mut screen = Screen::enter()?;
    let (refreshes, fetched) = sync_channel(2);
    let (waker, wake) = channel();
    // Detached: it ends at its next send or wait once these ends drop.
    fetch::spawn(args.admin, refreshes, wake).map_err(|source| DaemonError::Thread { source })?;
    let client = AdminClient::new(args.admin);
    let mut app = App::new(args.token_file.clone());
    let palette = Palette::from_env();
    loop {
        while let Ok(refresh) = fetched.try_recv() {
            match refresh {
                Ok(snapshot) => app.update(snapshot),
                Err(why) => app.error = Some(why),
            }
        }
        screen
            .terminal
            .draw(|frame| ui::draw(frame, &mut app, palette))?;
        if screen.signalled() {
            return Ok(());
        }
        if !event::poll(TICK)? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match app.key(key) {
            Action::None => {}
            Action::Quit => return Ok(()),
            Action::Pin {
                model,
                pin,
                token_file,
            } => {
                app.message = Some(pin_model(&client, model, pin, &token_file));
                fetch::wake(&waker);
            }
        }
    }
}

/// Pins or unpins `model`; what happened, in one line.
fn pin_model(
    client: &AdminClient,
    model: String,
    pin: bool,
    token_file: &std::path::Path,
) -> String {
    let (path, verb, command) = if pin {
        ("/v1/models/pin", "pinned", Command::Pin { model })
    } else {
        ("/v1/models/unpin", "unpinned", Command::Unpin { model })
    };
    match client.post::<ModelAnswer>(path, &command, token_file) {
        Ok(answer) => match answer.gpu {
            Some(gpu) => format!("{verb} {}: {} on GPU {gpu}", answer.model, answer.state),
            None => format!("{verb} {}: {}", answer.model, answer.state),
        },
        Err(err) => err.to_string(),
    }
}
