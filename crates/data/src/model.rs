//! The trade record as the store and every importer see it.

use crate::timestamp::Micros;

/// Buy or sell, stored as the original lowercase text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// Accepts buy/sell in any case, plus the short forms b/s and bid/ask.
    pub fn parse(text: &str) -> Result<Side, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "buy" | "b" | "bid" => Ok(Side::Buy),
            "sell" | "s" | "ask" => Ok(Side::Sell),
            other => Err(format!("{other:?} is not a side (expected buy or sell)")),
        }
    }
}

/// One trade, validated: every importer produces these, the store keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub trade_id: Option<String>,
    pub exchange: String,
    pub account_name: String,
    pub timestamp: Micros,
    pub symbol: String,
    pub side: Side,
    pub amount: f64,
    pub price: f64,
    pub fee: f64,
    pub fee_currency: Option<String>,
}

/// Parses a quantity: finite, and not negative unless `allow_negative`.
pub fn parse_number(text: &str, what: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("{what} is empty"));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => check_number(v, what),
        _ => Err(format!("{t:?} is not a number")),
    }
}

/// Checks a numeric field: finite and not negative.
pub fn check_number(v: f64, what: &str) -> Result<f64, String> {
    if !v.is_finite() {
        Err(format!("{what} is not a finite number"))
    } else if v < 0.0 {
        Err(format!(
            "{what} {v} is negative (the side column says buy or sell)"
        ))
    } else {
        Ok(v)
    }
}

/// Checks a required text field: present and not blank.
pub fn check_text(text: &str, what: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(t.to_string())
    }
}
