//! Binding identity: when two binding argument tables name the same binding.
//!
//! RabbitMQ stores bindings as Erlang terms and finds them by exact term equality, so
//! `{a, signedint, 1}` and `{a, long, 1}` are different bindings. `FieldTable`'s derived
//! `PartialEq` gives the same answer except for floats, where IEEE equality would make a
//! binding whose arguments hold a NaN unequal to itself: it could be added again and again
//! and never removed. Floats are therefore equal when IEEE says so (so `0.0` and `-0.0`
//! name one binding, as in the Erlang/OTP releases RabbitMQ 3.10 runs on) or when their
//! bit patterns are identical (so a NaN names the same binding as itself).

use amq_protocol::types::{AMQPValue, FieldTable};

/// True when `a` and `b` are the same arguments for the purpose of binding identity.
pub(crate) fn same_args(a: &FieldTable, b: &FieldTable) -> bool {
    let (a, b) = (a.inner(), b.inner());
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (a, b) {
        (AMQPValue::Float(x), AMQPValue::Float(y)) => x == y || x.to_bits() == y.to_bits(),
        (AMQPValue::Double(x), AMQPValue::Double(y)) => x == y || x.to_bits() == y.to_bits(),
        (AMQPValue::FieldTable(x), AMQPValue::FieldTable(y)) => same_args(x, y),
        (AMQPValue::FieldArray(x), AMQPValue::FieldArray(y)) => {
            let (x, y) = (x.as_slice(), y.as_slice());
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::FieldArray;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn type_matters_for_identity() {
        let a = table(&[("a", AMQPValue::LongInt(1))]);
        let b = table(&[("a", AMQPValue::LongLongInt(1))]);
        assert!(same_args(&a, &a.clone()));
        assert!(!same_args(&a, &b));
    }

    #[test]
    fn nan_is_identical_to_itself_even_nested() {
        let nan = AMQPValue::Double(f64::NAN);
        let arr = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Float(f32::NAN)]));
        let inner = AMQPValue::FieldTable(table(&[("n", nan.clone())]));
        let a = table(&[("x", nan), ("y", arr), ("z", inner)]);
        assert!(same_args(&a, &a.clone()));
    }

    #[test]
    fn signed_zeros_are_one_binding() {
        let a = table(&[("z", AMQPValue::Double(0.0))]);
        let b = table(&[("z", AMQPValue::Double(-0.0))]);
        assert!(same_args(&a, &b));
    }

    #[test]
    fn different_keys_or_sizes_differ() {
        let a = table(&[("a", AMQPValue::Void)]);
        let b = table(&[("b", AMQPValue::Void)]);
        let c = table(&[("a", AMQPValue::Void), ("b", AMQPValue::Void)]);
        assert!(!same_args(&a, &b));
        assert!(!same_args(&a, &c));
        assert!(same_args(&FieldTable::default(), &FieldTable::default()));
    }
}
