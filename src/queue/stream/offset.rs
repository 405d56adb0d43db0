//! What a stream consumer asks for: where to start (`x-stream-offset`) and which messages
//! (`x-stream-filter`, `x-stream-match-unfiltered`), parsed with RabbitMQ's rules
//! (`rabbit_stream_queue:parse_offset_arg/1`, `filter_spec/1`, and
//! `rabbit_amqqueue:check_stream_offset_arg/2` for what is refused).

use amq_protocol::types::{AMQPValue, FieldTable};

/// Where a consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message still in the stream.
    First,
    /// The start of the last chunk (here: the last index group, see `index`).
    Last,
    /// Only messages committed after the consumer attached (the default).
    Next,
    /// A numeric offset (clamped to the stream's range).
    Offset(u64),
    /// The first message stored at or after this time (milliseconds since the epoch).
    Timestamp(u64),
}

/// Parses RabbitMQ's `x-max-age` grammar `^[0-9]+[YMDhms]$` into seconds (positive; Y = 365
/// days, M = 30 days). `None` is RabbitMQ's `invalid_max_age`.
pub fn parse_interval(s: &str) -> Option<u64> {
    crate::queue::args::parse_max_age(s)
}

/// The text of a string-like field value.
fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Erlang's rendering of the field value RabbitMQ puts in `{invalid_stream_offset_arg,V}`.
fn erl_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => format!(
            "{{longstr,<<\"{}\">>}}",
            String::from_utf8_lossy(s.as_bytes())
        ),
        AMQPValue::ShortString(s) => format!("{{longstr,<<\"{}\">>}}", s.as_str()),
        AMQPValue::Boolean(b) => format!("{{bool,{b}}}"),
        other => format!("{{{},{}}}", crate::queue::args::type_name(other), "_"),
    }
}

/// Parses `x-stream-offset`: `Err` is the term RabbitMQ reports after
/// `invalid arg 'x-stream-offset' for queue …: `. `now_ms` resolves interval strings.
pub fn parse_start(v: Option<&AMQPValue>, now_ms: u64) -> Result<Start, String> {
    let Some(v) = v else {
        return Ok(Start::Next);
    };
    let invalid = || Err(format!("{{invalid_stream_offset_arg,{}}}", erl_value(v)));
    if let Some(s) = text(v) {
        return match s.as_str() {
            "first" => Ok(Start::First),
            "last" => Ok(Start::Last),
            "next" => Ok(Start::Next),
            other => match parse_interval(other) {
                Some(secs) => Ok(Start::Timestamp(
                    now_ms.saturating_sub(secs.saturating_mul(1000)),
                )),
                None => invalid(),
            },
        };
    }
    match v {
        AMQPValue::Timestamp(secs) => Ok(Start::Timestamp(secs.saturating_mul(1000))),
        other => match crate::queue::args::int_value(other) {
            // Negative offsets clamp to the start, as osiris does.
            Some(i) => Ok(Start::Offset(i.max(0) as u64)),
            None => invalid(),
        },
    }
}

/// Which messages a consumer gets (`x-stream-filter`, `x-stream-match-unfiltered`).
/// Matching is exact, per message; RabbitMQ's per-chunk Bloom filter may deliver more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Filter values, any of which matches; empty: no filtering.
    pub values: Vec<String>,
    /// Messages without a filter value match too.
    pub match_unfiltered: bool,
}

impl Filter {
    /// The consumer's filter from its arguments (values of other types are ignored, as
    /// RabbitMQ's `filter_spec/1` does; the match flag counts only with a filter).
    pub fn from_args(args: &FieldTable) -> Filter {
        let values = match args.inner().get("x-stream-filter") {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().filter_map(text).collect(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        };
        let match_unfiltered = !values.is_empty()
            && matches!(
                args.inner().get("x-stream-match-unfiltered"),
                Some(AMQPValue::Boolean(true))
            );
        Filter {
            values,
            match_unfiltered,
        }
    }

    /// Whether a message with this filter value is delivered.
    pub fn matches(&self, value: Option<&str>) -> bool {
        if self.values.is_empty() {
            return true;
        }
        match value {
            None => self.match_unfiltered,
            Some(v) => self.values.iter().any(|f| f == v),
        }
    }
}

/// The filter value a published message carries (header `x-stream-filter-value`, a string).
pub fn filter_value(headers: Option<&FieldTable>) -> Option<String> {
    headers?.inner().get("x-stream-filter-value").and_then(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_grammar() {
        assert_eq!(parse_interval("1Y"), Some(365 * 86400));
        assert_eq!(parse_interval("2M"), Some(60 * 86400));
        assert_eq!(parse_interval("7D"), Some(7 * 86400));
        assert_eq!(parse_interval("10h"), Some(36000));
        assert_eq!(parse_interval("30m"), Some(1800));
        assert_eq!(parse_interval("100s"), Some(100));
        for bad in ["", "D", "1A", "0s", "1.5h", "-1s", " 1s", "1S", "s1"] {
            assert_eq!(parse_interval(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn offset_spec() {
        let s = |x: &str| AMQPValue::LongString(x.into());
        assert_eq!(parse_start(None, 0), Ok(Start::Next));
        assert_eq!(parse_start(Some(&s("first")), 0), Ok(Start::First));
        assert_eq!(parse_start(Some(&s("last")), 0), Ok(Start::Last));
        assert_eq!(parse_start(Some(&s("next")), 0), Ok(Start::Next));
        assert_eq!(
            parse_start(Some(&AMQPValue::LongLongInt(42)), 0),
            Ok(Start::Offset(42))
        );
        assert_eq!(
            parse_start(Some(&AMQPValue::ShortInt(7)), 0),
            Ok(Start::Offset(7))
        );
        assert_eq!(
            parse_start(Some(&AMQPValue::LongInt(-3)), 0),
            Ok(Start::Offset(0))
        );
        assert_eq!(
            parse_start(Some(&AMQPValue::Timestamp(1_700_000_000)), 0),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            parse_start(Some(&s("30m")), 10_000_000),
            Ok(Start::Timestamp(10_000_000 - 1_800_000))
        );
        assert_eq!(
            parse_start(Some(&s("bogus")), 0),
            Err("{invalid_stream_offset_arg,{longstr,<<\"bogus\">>}}".into())
        );
        assert!(parse_start(Some(&AMQPValue::Boolean(true)), 0).is_err());
    }

    #[test]
    fn filters() {
        let mut t = FieldTable::default();
        assert_eq!(Filter::from_args(&t), Filter::default());
        assert!(Filter::default().matches(None));
        t.insert("x-stream-match-unfiltered".into(), AMQPValue::Boolean(true));
        assert!(
            !Filter::from_args(&t).match_unfiltered,
            "only with a filter"
        );
        t.insert("x-stream-filter".into(), AMQPValue::LongString("a".into()));
        let f = Filter::from_args(&t);
        assert!(f.matches(Some("a")) && f.matches(None) && !f.matches(Some("b")));
        let mut arr = amq_protocol::types::FieldArray::default();
        arr.push(AMQPValue::LongString("a".into()));
        arr.push(AMQPValue::LongString("b".into()));
        let mut t = FieldTable::default();
        t.insert("x-stream-filter".into(), AMQPValue::FieldArray(arr));
        let f = Filter::from_args(&t);
        assert!(f.matches(Some("a")) && f.matches(Some("b")) && !f.matches(Some("c")));
        assert!(!f.matches(None));
    }
}
