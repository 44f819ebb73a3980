//! Method names and numbers as the gateway sees them: a legacy client's
//! `action` is a method name, the mesh carries numbers, and the numbers
//! are the host's (the process side's method table, which agent processes
//! ask too), so one name has one number for everyone.
//!
//! The gateway caches what it learned, so the host's table (behind the
//! daemon's lock) is asked once per name. Actions come from untrusted
//! clients and the host's table is bounded, so the gateway adds at most
//! [`MAX_NEW_ACTIONS`] names of its own; past that an action nobody here
//! declared is refused, and names agents declared still work.

use std::collections::HashMap;

/// Most method names legacy clients may add to the host's table.
pub const MAX_NEW_ACTIONS: usize = 256;

/// The host's method table, as the daemon lends it to the gateway.
pub trait MethodNames: Send {
    /// The number of `name`, if the table has it.
    fn find(&mut self, name: &str) -> Option<u16>;
    /// The number of `name`, added if new; `None` when the table is full.
    fn add(&mut self, name: &str) -> Option<u16>;
    /// The name of number `id`.
    fn name(&mut self, id: u16) -> Option<String>;
}

/// What the gateway learned of the host's table.
pub(super) struct Names {
    host: Box<dyn MethodNames>,
    numbers: HashMap<String, u16>,
    names: HashMap<u16, String>,
    added: usize,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("known", &self.numbers.len())
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

impl Names {
    pub fn new(host: Box<dyn MethodNames>) -> Self {
        Names {
            host,
            numbers: HashMap::new(),
            names: HashMap::new(),
            added: 0,
        }
    }

    /// The number of action `name` (already checked as a method name);
    /// the reason when it has none.
    pub fn number(&mut self, name: &str) -> Result<u16, String> {
        if let Some(&id) = self.numbers.get(name) {
            return Ok(id);
        }
        let id = match self.host.find(name) {
            Some(id) => id,
            None if self.added >= MAX_NEW_ACTIONS => {
                return Err(format!(
                    "unknown action {name:?}: no agent here declared it, and legacy clients added {MAX_NEW_ACTIONS} actions already"
                ));
            }
            None => {
                let id = self.host.add(name).ok_or_else(|| {
                    format!("unknown action {name:?}: the host's method table is full")
                })?;
                self.added += 1;
                id
            }
        };
        self.numbers.insert(name.to_owned(), id);
        self.names.insert(id, name.to_owned());
        Ok(id)
    }

    /// The name of method `id` (`method_<id>` when the host has none).
    pub fn name(&mut self, id: u16) -> String {
        if let Some(name) = self.names.get(&id) {
            return name.clone();
        }
        match self.host.name(id) {
            Some(name) => {
                self.numbers.insert(name.clone(), id);
                self.names.insert(id, name.clone());
                name
            }
            None => format!("method_{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host table with `work` = 1, counting how often it is asked.
    #[derive(Default)]
    struct Table {
        names: Vec<String>,
        asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl MethodNames for Table {
        fn find(&mut self, name: &str) -> Option<u16> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let at = self.names.iter().position(|n| n == name)?;
            Some(at as u16 + 1)
        }
        fn add(&mut self, name: &str) -> Option<u16> {
            self.names.push(name.to_owned());
            Some(self.names.len() as u16)
        }
        fn name(&mut self, id: u16) -> Option<String> {
            self.names.get(usize::from(id).checked_sub(1)?).cloned()
        }
    }

    #[test]
    fn a_name_is_asked_of_the_host_once_then_cached_both_ways() {
        let table = Table {
            names: vec!["work".into()],
            ..Table::default()
        };
        let asked = std::sync::Arc::clone(&table.asked);
        let mut sut = Names::new(Box::new(table));

        assert_eq!(sut.number("work"), Ok(1));
        assert_eq!(sut.number("work"), Ok(1));
        assert_eq!(sut.name(1), "work");
        assert_eq!(sut.name(9), "method_9");
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn clients_add_a_bounded_number_of_names_and_declared_ones_still_work() {
        let mut sut = Names::new(Box::new(Table {
            names: vec!["work".into()],
            ..Table::default()
        }));
        for i in 0..MAX_NEW_ACTIONS {
            sut.number(&format!("a{i}")).expect("room");
        }

        let refused = sut.number("one_more");

        assert!(refused.is_err_and(|why| why.contains("unknown action")));
        assert_eq!(sut.number("work"), Ok(1));
    }
}
