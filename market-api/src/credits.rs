//! Amounts of credits, as the market counts them: integer micro-credits.

/// Amounts are integer micro-credits; one credit is [`CREDIT`] micro-credits.
pub type Micros = i64;
pub const CREDIT: Micros = 1_000_000;
/// Upper bound of one amount (a thousand million credits): keeps every sum far from overflow.
pub const MAX_AMOUNT: Micros = 1_000_000_000 * CREDIT;
