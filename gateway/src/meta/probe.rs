//! What tests observe inside a store's reads: how many rows a listing read, and a pause
//! inside an aggregate read while it holds its connection. Outside tests these do nothing.

#[cfg(test)]
use std::cell::{Cell, RefCell};

#[cfg(test)]
thread_local! {
    static LISTED_ROWS: Cell<u64> = const { Cell::new(0) };
    static AGGREGATE_ROW: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
}

/// A listing read one more row from its store.
#[inline]
pub(crate) fn listed_row() {
    #[cfg(test)]
    LISTED_ROWS.with(|n| n.set(n.get() + 1));
}

/// An aggregate read is reading a row, its connection held.
#[inline]
pub(crate) fn aggregate_row() {
    #[cfg(test)]
    AGGREGATE_ROW.with(|hook| {
        if let Some(hook) = hook.borrow_mut().as_mut() {
            hook();
        }
    });
}

/// Rows listings read on this thread since the last call.
#[cfg(test)]
pub(crate) fn take_listed_rows() -> u64 {
    LISTED_ROWS.with(|n| n.replace(0))
}

/// Runs `hook` at each row an aggregate read reads on this thread from now on.
#[cfg(test)]
pub(crate) fn on_aggregate_row(hook: impl FnMut() + 'static) {
    AGGREGATE_ROW.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
}
