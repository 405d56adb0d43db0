//! Erlang's `~p` rendering of AMQP field values, so error texts can match RabbitMQ's.
//!
//! RabbitMQ builds some reply texts with `io_lib:format("... ~p ...", [Value])`, where
//! `Value` is the field value as rabbit_binary_parser decodes it (a binary, an integer, a
//! `{Type, Value}` list for an array...). A client that compares reply texts sees Erlang's
//! pretty printer at work: binaries as `<<"foo">>` or `<<1,2,3>>`, floats in Erlang's
//! shortest form (`1.0e10`), and terms too wide for an 80-column line broken over several
//! lines and indented under their opening bracket.
//!
//! This module re-implements the parts of OTP's io_lib_pretty layout that such values can
//! exercise (lists, tuples, tagged tuples, binaries, atoms and numbers), following the
//! rules of the OTP release RabbitMQ 3.10 runs on: `~p` treats binaries as Latin-1 (no
//! `/utf8` form), and floats use the older shortest-digits notation. It is checked against
//! texts recorded from RabbitMQ 3.10.8 (see `testdata/`). Output is a byte string: Erlang
//! emits Latin-1 characters, which RabbitMQ puts on the wire byte for byte.

use amq_protocol::types::AMQPValue;

/// io_lib:format's line length for `~p`.
const LINE: i64 = 80;

/// An Erlang term of the shapes a decoded AMQP field value can take.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term<'a> {
    Atom(&'static str),
    Int(i128),
    Float(f64),
    Binary(&'a [u8]),
    Tuple(Vec<Term<'a>>),
    List(Vec<Term<'a>>),
}

/// The type atom rabbit_binary_parser gives a field value.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        // Short strings never occur inside a table on the wire; RabbitMQ would see text.
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// The Erlang term rabbit_binary_parser decodes a field value to (without its type).
pub(crate) fn value_term(v: &AMQPValue) -> Term<'_> {
    match v {
        AMQPValue::Boolean(b) => Term::Atom(if *b { "true" } else { "false" }),
        AMQPValue::ShortShortInt(i) => Term::Int((*i).into()),
        AMQPValue::ShortShortUInt(i) => Term::Int((*i).into()),
        AMQPValue::ShortInt(i) => Term::Int((*i).into()),
        AMQPValue::ShortUInt(i) => Term::Int((*i).into()),
        AMQPValue::LongInt(i) => Term::Int((*i).into()),
        AMQPValue::LongUInt(i) => Term::Int((*i).into()),
        AMQPValue::LongLongInt(i) => Term::Int((*i).into()),
        AMQPValue::Timestamp(i) => Term::Int((*i).into()),
        AMQPValue::Float(f) => Term::Float((*f).into()),
        AMQPValue::Double(f) => Term::Float(*f),
        AMQPValue::DecimalValue(d) => {
            Term::Tuple(vec![Term::Int(d.scale.into()), Term::Int(d.value.into())])
        }
        AMQPValue::ShortString(s) => Term::Binary(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => Term::Binary(s.as_bytes()),
        AMQPValue::ByteArray(b) => Term::Binary(b.as_slice()),
        AMQPValue::FieldArray(a) => Term::List(
            a.as_slice()
                .iter()
                .map(|e| Term::Tuple(vec![Term::Atom(type_name(e)), value_term(e)]))
                .collect(),
        ),
        AMQPValue::FieldTable(t) => Term::List(
            t.into_iter()
                .map(|(k, e)| {
                    Term::Tuple(vec![
                        Term::Binary(k.as_str().as_bytes()),
                        Term::Atom(type_name(e)),
                        value_term(e),
                    ])
                })
                .collect(),
        ),
        AMQPValue::Void => Term::Atom("undefined"),
    }
}

/// Renders `term` as `~p` would when the text before it on the current line is
/// `col - 1` characters long.
pub(crate) fn pretty(term: &Term<'_>, col: usize) -> Vec<u8> {
    let col = i64::try_from(col).unwrap_or(LINE);
    let layout = Layout::of(term);
    let mut out = Vec::new();
    let m = layout.len;
    let nested = matches!(term, Term::Binary(_) | Term::List(_) | Term::Tuple(_));
    if !nested || m < LINE - col {
        layout.write(&mut out);
        return out;
    }
    // Indentation for tagged tuples: OTP tries "none", then 4, and settles for 1 if both
    // would push text past half the line.
    let tind = [-1, 4]
        .into_iter()
        .find(|&t| layout.cind(col, m, t, 0, 0).is_ok())
        .unwrap_or(1);
    let mut pp = Printer { out, m, tind };
    pp.pp(&layout, col, col - 1, 0, 0);
    pp.out
}

/// Erlang's shortest round-trip float notation (io_lib_format:fwrite_g of OTP 24/25).
pub(crate) fn format_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    if !f.is_finite() {
        // Erlang has no such floats; the wire decoder rejects them.
        return format!("{f}");
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "d.ddde±x".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i64 = exp.parse().unwrap_or(0);
    // Value = 0.DIGITS × 10^place.
    let place = exp + 1;
    let len = digits.len() as i64;
    let body = if place == 0 {
        format!("0.{digits}")
    } else if place < 0 || place >= len {
        let exp_text = (place - 1).to_string();
        let exp_dot = if len == 1 { 2 } else { 1 };
        let exp_cost = exp_text.len() as i64 + 1 + exp_dot;
        let zeros = |n: i64| "0".repeat(usize::try_from(n).unwrap_or(0));
        if place < 0 && 2 - place <= exp_cost {
            format!("0.{}{digits}", zeros(-place))
        } else if place >= len && place - len + 2 <= exp_cost && f.abs() < 9007199254740992.0 {
            format!("{digits}{}.0", zeros(place - len))
        } else {
            let (first, rest) = digits.split_at(1);
            let rest = if rest.is_empty() { "0" } else { rest };
            format!("{first}.{rest}e{exp_text}")
        }
    } else {
        let (int, frac) = digits.split_at(usize::try_from(place).unwrap_or(0));
        format!("{int}.{frac}")
    };
    if f < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

/// Is every byte one that Erlang's Latin-1 `~p` prints inside a string literal?
fn printable_latin1(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&c| matches!(c, 0x20..=0x7e | 0xa0..=0xff | b'\n' | b'\r' | b'\t' | 0x0b | 0x08 | 0x0c | 0x1b))
}

fn quoted_binary(bytes: &[u8]) -> Vec<u8> {
    let mut s = b"<<\"".to_vec();
    for &c in bytes {
        let escape = match c {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            0x0b => Some(b'v'),
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            0x1b => Some(b'e'),
            _ => None,
        };
        match escape {
            Some(e) => s.extend_from_slice(&[b'\\', e]),
            None => s.push(c),
        }
    }
    s.extend_from_slice(b"\">>");
    s
}

/// io_lib_pretty's intermediate form: the term with every part's flat width computed.
#[derive(Debug)]
struct Layout {
    kind: Kind,
    /// Width when written on one line.
    len: i64,
}

#[derive(Debug)]
enum Kind {
    /// Printed as is, never broken (atoms, numbers, printable binaries, `[]`).
    Leaf(Vec<u8>),
    /// A binary printed as numbers, which may be broken between numbers.
    Bytes(Vec<String>),
    List(Vec<Layout>),
    Tuple(Vec<Layout>),
    /// A tuple of two or more whose first element is an atom: the printer may hang the
    /// other elements under the tag.
    Tagged {
        tag: Box<Layout>,
        rest: Vec<Layout>,
    },
}

impl Layout {
    fn leaf(text: Vec<u8>) -> Layout {
        let len = text.len() as i64;
        Layout {
            kind: Kind::Leaf(text),
            len,
        }
    }

    fn of(term: &Term<'_>) -> Layout {
        match term {
            Term::Atom(a) => Layout::leaf(a.as_bytes().to_vec()),
            Term::Int(i) => Layout::leaf(i.to_string().into_bytes()),
            Term::Float(f) => Layout::leaf(format_float(*f).into_bytes()),
            Term::Binary([]) => Layout::leaf(b"<<>>".to_vec()),
            Term::Binary(b) if printable_latin1(b) => Layout::leaf(quoted_binary(b)),
            Term::Binary(b) => {
                let nums: Vec<String> = b.iter().map(u8::to_string).collect();
                let len = 4 + nums.iter().map(|n| n.len() as i64 + 1).sum::<i64>() - 1;
                Layout {
                    kind: Kind::Bytes(nums),
                    len,
                }
            }
            Term::List(items) if items.is_empty() => Layout::leaf(b"[]".to_vec()),
            Term::Tuple(items) if items.is_empty() => Layout::leaf(b"{}".to_vec()),
            Term::List(items) => {
                let elems: Vec<Layout> = items.iter().map(Layout::of).collect();
                let len = bracketed_len(&elems);
                Layout {
                    kind: Kind::List(elems),
                    len,
                }
            }
            Term::Tuple(items) => {
                let mut elems: Vec<Layout> = items.iter().map(Layout::of).collect();
                let len = bracketed_len(&elems);
                let kind = match items.first() {
                    Some(Term::Atom(_)) if items.len() > 1 => {
                        let tag = Box::new(elems.remove(0));
                        Kind::Tagged { tag, rest: elems }
                    }
                    _ => Kind::Tuple(elems),
                };
                Layout { kind, len }
            }
        }
    }

    /// io_lib_pretty's ?ATM: a part that is plain text rather than a structure.
    fn atomic(&self) -> bool {
        matches!(self.kind, Kind::Leaf(_))
    }

    fn write(&self, out: &mut Vec<u8>) {
        let seq = |out: &mut Vec<u8>, open: u8, elems: &[Layout], close: u8| {
            out.push(open);
            for (i, e) in elems.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                e.write(out);
            }
            out.push(close);
        };
        match &self.kind {
            Kind::Leaf(text) => out.extend_from_slice(text),
            Kind::Bytes(nums) => {
                out.extend_from_slice(b"<<");
                out.extend_from_slice(nums.join(",").as_bytes());
                out.extend_from_slice(b">>");
            }
            Kind::List(elems) => seq(out, b'[', elems, b']'),
            Kind::Tuple(elems) => seq(out, b'{', elems, b'}'),
            Kind::Tagged { tag, rest } => {
                out.push(b'{');
                tag.write(out);
                for e in rest {
                    out.push(b',');
                    e.write(out);
                }
                out.push(b'}');
            }
        }
    }

    /// Fits on the rest of the line at `col`, with `ld` closing characters after it and
    /// `w` characters already on the line.
    fn fits(&self, col: i64, m: i64, ld: i64, w: i64) -> bool {
        self.len < LINE - col - ld && self.len + w + ld <= m
    }

    /// io_lib_pretty's cind: would the layout with tag indentation `t` stay sane?
    fn cind(&self, col: i64, m: i64, t: i64, ld: i64, w: i64) -> Result<(), NoGood> {
        if self.fits(col, m, ld, w) {
            return Ok(());
        }
        match &self.kind {
            Kind::List(elems) | Kind::Tuple(elems) => cind_list(elems, col + 1, m, t, ld, w + 1),
            Kind::Tagged { tag, rest } => {
                let tag_ind = tag.len + 2;
                let tcol = col + tag_ind;
                if t > 0 && tag_ind > t {
                    let col1 = col + t;
                    if m + col1 <= LINE || col1 <= LINE / 2 {
                        cind_tail(rest, col1, tcol, m, t, ld, w + 1 + tag.len)
                    } else {
                        Err(NoGood)
                    }
                } else if m + tcol < LINE || tcol < LINE / 2 {
                    cind_list(rest, tcol, m, t, ld, w + 1 + tag.len + 1)
                } else {
                    Err(NoGood)
                }
            }
            Kind::Leaf(_) | Kind::Bytes(_) => Ok(()),
        }
    }

    fn cind_element(&self, col: i64, m: i64, t: i64, ld: i64, w: i64) -> Result<i64, NoGood> {
        if self.atomic() && self.fits(col, m, ld, w) {
            return Ok(self.len);
        }
        self.cind(col, m, t, ld, w)?;
        Ok(LINE)
    }
}

fn bracketed_len(elems: &[Layout]) -> i64 {
    2 + elems.iter().map(|e| e.len).sum::<i64>() + elems.len() as i64 - 1
}

/// Closing characters after an element: none if more elements follow it, else one more
/// than after its container.
fn last_depth(rest: &[Layout], ld: i64) -> i64 {
    if rest.is_empty() {
        ld + 1
    } else {
        0
    }
}

/// Whether a following element can go on the current line after a comma.
fn fits_after_comma(e: &Layout, col: i64, m: i64, ld1: i64, w: i64) -> bool {
    let elen = 1 + e.len;
    e.atomic()
        && if ld1 == 0 {
            elen + 1 < LINE - col && w + elen < m
        } else {
            elen < LINE - col - ld1 && w + elen + ld1 <= m
        }
}

#[derive(Debug)]
struct NoGood;

fn cind_list(elems: &[Layout], col0: i64, m: i64, t: i64, ld: i64, w: i64) -> Result<(), NoGood> {
    let Some((first, rest)) = elems.split_first() else {
        return Ok(());
    };
    let we = first.cind_element(col0, m, t, last_depth(rest, ld), w)?;
    cind_tail(rest, col0, col0 + we, m, t, ld, w + we)
}

fn cind_tail(
    elems: &[Layout],
    col0: i64,
    mut col: i64,
    m: i64,
    t: i64,
    ld: i64,
    mut w: i64,
) -> Result<(), NoGood> {
    for (i, e) in elems.iter().enumerate() {
        let ld1 = last_depth(&elems[i + 1..], ld);
        if fits_after_comma(e, col, m, ld1, w) {
            col += 1 + e.len;
            w += 1 + e.len;
        } else {
            let we = e.cind_element(col0, m, t, ld1, 0)?;
            col = col0 + we;
            w = we;
        }
    }
    Ok(())
}

/// io_lib_pretty's pp: lays a term out over several lines.
struct Printer {
    out: Vec<u8>,
    /// Flat width of the whole term (io_lib_pretty's M when no limit is given).
    m: i64,
    /// Indentation for the elements after a tag.
    tind: i64,
}

impl Printer {
    fn newline(&mut self, ind: i64) {
        self.out.push(b'\n');
        self.out
            .extend(std::iter::repeat_n(b' ', usize::try_from(ind).unwrap_or(0)));
    }

    fn pp(&mut self, e: &Layout, col: i64, ind: i64, ld: i64, w: i64) {
        if e.fits(col, self.m, ld, w) {
            e.write(&mut self.out);
            return;
        }
        match &e.kind {
            Kind::List(elems) | Kind::Tuple(elems) => {
                let (open, close) = if matches!(e.kind, Kind::List(_)) {
                    (b'[', b']')
                } else {
                    (b'{', b'}')
                };
                self.out.push(open);
                self.pp_list(elems, col + 1, ind + 1, ld, w + 1);
                self.out.push(close);
            }
            Kind::Tagged { tag, rest } => {
                self.out.push(b'{');
                self.pp_tag_tuple(tag, rest, col, ind, ld, w + 1);
                self.out.push(b'}');
            }
            Kind::Bytes(nums) => self.pp_bytes(nums, col + 2, ind + 2, ld, w),
            Kind::Leaf(text) => self.out.extend_from_slice(text),
        }
    }

    fn pp_tag_tuple(&mut self, tag: &Layout, rest: &[Layout], col: i64, ind: i64, ld: i64, w: i64) {
        let tag_ind = tag.len + 2;
        let tcol = col + tag_ind;
        tag.write(&mut self.out);
        if self.tind > 0 && tag_ind > self.tind {
            let tind = self.tind;
            self.pp_tail(rest, col + tind, tcol, ind + tind, ld, w + tag.len);
        } else {
            self.out.push(b',');
            self.pp_list(rest, tcol, ind + tag_ind, ld, w + tag.len + 1);
        }
    }

    fn pp_list(&mut self, elems: &[Layout], col0: i64, ind: i64, ld: i64, w: i64) {
        let Some((first, rest)) = elems.split_first() else {
            return;
        };
        let we = self.pp_element(first, col0, ind, last_depth(rest, ld), w);
        self.pp_tail(rest, col0, col0 + we, ind, ld, w + we);
    }

    fn pp_tail(
        &mut self,
        elems: &[Layout],
        col0: i64,
        mut col: i64,
        ind: i64,
        ld: i64,
        mut w: i64,
    ) {
        for (i, e) in elems.iter().enumerate() {
            let ld1 = last_depth(&elems[i + 1..], ld);
            self.out.push(b',');
            if fits_after_comma(e, col, self.m, ld1, w) {
                e.write(&mut self.out);
                col += 1 + e.len;
                w += 1 + e.len;
            } else {
                self.newline(ind);
                let we = self.pp_element(e, col0, ind, ld1, 0);
                col = col0 + we;
                w = we;
            }
        }
    }

    /// Lays out one element; returns its width, or the line length to force the next
    /// element onto a new line when this one was not plain text.
    fn pp_element(&mut self, e: &Layout, col: i64, ind: i64, ld: i64, w: i64) -> i64 {
        if e.atomic() && e.fits(col, self.m, ld, w) {
            e.write(&mut self.out);
            return e.len;
        }
        self.pp(e, col, ind, ld, w);
        LINE
    }

    /// A non-printable binary, broken between numbers where the line is full.
    fn pp_bytes(&mut self, nums: &[String], col: i64, ind: i64, ld: i64, w: i64) {
        let width = ((LINE - col).min(self.m - 4 - w) - ld).max(8);
        let mut room = width;
        self.out.extend_from_slice(b"<<");
        if let Some((last, init)) = nums.split_last() {
            for num in init {
                let len = num.len() as i64 + 1;
                if room - len < 0 {
                    self.newline(ind);
                    room = width - len;
                } else {
                    room -= len;
                }
                self.out.extend_from_slice(num.as_bytes());
                self.out.push(b',');
            }
            if last.len() as i64 > room {
                self.newline(ind);
            }
            self.out.extend_from_slice(last.as_bytes());
        }
        self.out.extend_from_slice(b">>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(term: &Term<'_>, col: usize) -> String {
        String::from_utf8(pretty(term, col)).expect("ascii")
    }

    #[test]
    fn floats_use_erlangs_shortest_notation() {
        // Each pair was printed by RabbitMQ 3.10.8.
        for (f, s) in [
            (1.5, "1.5"),
            (1e10, "1.0e10"),
            (0.0001, "0.0001"),
            (f64::from(0.1f32), "0.10000000149011612"),
            (100.0, "100.0"),
            (1e21, "1.0e21"),
            (123456789.0, "123456789.0"),
            (1e-5, "1.0e-5"),
            (-0.0, "-0.0"),
            (2.5e-10, "2.5e-10"),
            (1e100, "1.0e100"),
            (12345678901234567890.0, "1.2345678901234567e19"),
            (0.1, "0.1"),
            (1e15, "1.0e15"),
            (123456.7, "123456.7"),
            (0.001, "0.001"),
            (5e-324, "5.0e-324"),
        ] {
            assert_eq!(format_float(f), s, "{f:e}");
        }
        assert_eq!(format_float(0.0), "0.0");
        assert_eq!(format_float(-1.5), "-1.5");
    }

    #[test]
    fn binaries_print_as_latin1_strings_or_numbers() {
        assert_eq!(p(&Term::Binary(b"foo"), 1), "<<\"foo\">>");
        assert_eq!(p(&Term::Binary(b""), 1), "<<>>");
        assert_eq!(
            p(&Term::Binary(b"a\"b\\c\n\x1b"), 1),
            "<<\"a\\\"b\\\\c\\n\\e\">>"
        );
        assert_eq!(p(&Term::Binary(b"a\x7fb"), 1), "<<97,127,98>>");
        assert_eq!(pretty(&Term::Binary(&[0xe9]), 1), b"<<\"\xe9\">>");
    }

    #[test]
    fn short_terms_stay_on_one_line() {
        let t = Term::List(vec![Term::Tuple(vec![
            Term::Atom("signedint"),
            Term::Int(1),
        ])]);
        assert_eq!(p(&t, 41), "[{signedint,1}]");
        assert_eq!(
            p(&Term::Tuple(vec![Term::Int(2), Term::Int(314)]), 1),
            "{2,314}"
        );
    }

    #[test]
    fn wide_lists_break_one_element_per_line() {
        let elems = (0..4)
            .map(|i| Term::Tuple(vec![Term::Atom("signedint"), Term::Int(i)]))
            .collect();
        let pad = " ".repeat(41);
        assert_eq!(
            p(&Term::List(elems), 41),
            format!("[{{signedint,0}},\n{pad}{{signedint,1}},\n{pad}{{signedint,2}},\n{pad}{{signedint,3}}]")
        );
    }
}
