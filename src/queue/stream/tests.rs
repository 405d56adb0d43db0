//! Storage tests: append, read from any offset or time, segment roll, retention,
//! recovery of a torn tail.

use super::reader::Cursor;
use super::*;
use crate::protocol::codec::ShortStr;
use amq_protocol::types::AMQPValue;

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "warren-stream-{what}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn msg(body: &str, filter: Option<&str>) -> Message {
    let mut p = amq_protocol::protocol::basic::AMQPProperties::default();
    if let Some(f) = filter {
        let mut h = amq_protocol::types::FieldTable::default();
        h.insert(
            "x-stream-filter-value".into(),
            AMQPValue::LongString(f.into()),
        );
        p = p.with_headers(h);
    }
    let (props, _) = cookie_factory::gen(
        amq_protocol::protocol::basic::gen_properties(&p),
        Vec::new(),
    )
    .unwrap();
    Message::new(
        ShortStr::from_static("x"),
        ShortStr::from_static("rk"),
        props.into(),
        body.to_string().into_bytes().into(),
    )
}

fn read_all(s: &Arc<Stream>, from: u64) -> Vec<(u64, String)> {
    let mut c = Cursor::new(s.clone(), from);
    let mut out = Vec::new();
    while let Some(e) = c.next_entry(s.committed()) {
        out.push((e.offset, String::from_utf8_lossy(&e.body).into_owned()));
    }
    out
}

fn settings(seg: u64) -> Settings {
    Settings {
        max_segment_size: seg,
        ..Default::default()
    }
}

#[test]
fn appends_read_back_with_offset_header() {
    let d = TempDir::new("basic");
    let s = Stream::open(d.0.clone(), Settings::default()).unwrap();
    assert_eq!((s.committed(), s.message_count()), (0, 0));
    for i in 0..10 {
        assert_eq!(s.append(&msg(&format!("m{i}"), None), None), None);
    }
    assert_eq!(
        (s.committed(), s.message_count(), s.first_offset()),
        (10, 10, 0)
    );
    let all = read_all(&s, 0);
    assert_eq!(all.len(), 10);
    assert_eq!(all[3], (3, "m3".to_string()));
    assert_eq!(read_all(&s, 7).first().map(|e| e.0), Some(7));
    // Each delivery's properties carry x-stream-offset = its offset, as a long ('l').
    let mut c = Cursor::new(s.clone(), 4);
    let e = c.next_entry(10).unwrap();
    let h = crate::protocol::properties::headers(&e.properties).unwrap();
    assert_eq!(
        h.inner().get("x-stream-offset"),
        Some(&AMQPValue::LongLongInt(4))
    );
}

#[test]
fn rolls_segments_and_seeks_across_them() {
    let d = TempDir::new("roll");
    let s = Stream::open(d.0.clone(), settings(1000)).unwrap();
    let body = "b".repeat(300);
    for _ in 0..50 {
        s.append(&msg(&body, None), None);
    }
    let (segments, bytes, _) = s.info();
    assert!(segments >= 10, "{segments} segments");
    assert!(bytes > 50 * 300);
    let all = read_all(&s, 0);
    assert_eq!(
        all.iter().map(|e| e.0).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    for start in [0, 1, 17, 33, 49] {
        assert_eq!(read_all(&s, start).first().map(|e| e.0), Some(start));
    }
    assert!(read_all(&s, 50).is_empty());
    assert!(s.last_chunk_offset() <= 49 && s.last_chunk_offset() > 40);
}

#[test]
fn index_seek_in_a_large_segment() {
    let d = TempDir::new("index");
    let s = Stream::open(d.0.clone(), Settings::default()).unwrap();
    let body = "i".repeat(1000);
    for _ in 0..1000 {
        s.append(&msg(&body, None), None);
    }
    let segs = s.segs.lock().clone();
    assert_eq!(segs.len(), 1);
    assert!(
        segs[0].index.len() > 10,
        "sparse index: {}",
        segs[0].index.len()
    );
    drop(segs);
    assert_eq!(read_all(&s, 777)[0].0, 777);
    // The index file was written and is what a restart loads.
    let data = std::fs::read(index::path(&d.0, 0)).unwrap();
    assert_eq!(data.len() / index::ENTRY, s.segs.lock()[0].index.len());
}

#[test]
fn timestamp_seek_finds_the_first_message_at_or_after() {
    let d = TempDir::new("ts");
    let s = Stream::open(d.0.clone(), settings(500)).unwrap();
    for i in 0..5 {
        s.append(&msg(&format!("old{i}"), None), None);
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cut = crate::store::log::now_ms();
    for i in 0..5 {
        s.append(&msg(&format!("new{i}"), None), None);
    }
    let mut c = Cursor::new(s.clone(), 0);
    c.seek_timestamp(cut, s.committed());
    assert_eq!(c.next, 5);
    c.seek_timestamp(0, s.committed());
    assert_eq!(c.next, 0);
    c.seek_timestamp(cut + 60_000, s.committed());
    assert_eq!(c.next, 10, "a future time starts at the end");
}

#[test]
fn retention_by_bytes_keeps_the_active_segment() {
    let d = TempDir::new("retain");
    let mut st = settings(1000);
    st.max_bytes = Some(2500);
    let s = Stream::open(d.0.clone(), st).unwrap();
    let body = "r".repeat(400);
    for _ in 0..40 {
        s.append(&msg(&body, None), None);
    }
    let (segments, bytes, _) = s.info();
    assert!(bytes <= 2500 + 1000, "{bytes} bytes kept");
    assert!((1..=4).contains(&segments), "{segments}");
    let first = s.first_offset();
    assert!(first > 0, "old segments were deleted");
    assert_eq!(s.message_count(), 40 - first);
    assert_eq!(
        read_all(&s, 0).first().map(|e| e.0),
        Some(first),
        "clamped to the first kept"
    );
    let files = std::fs::read_dir(&d.0).unwrap().count();
    assert_eq!(files, segments * 2, "a .seg and an .idx per segment");
}

#[test]
fn retention_by_age() {
    let d = TempDir::new("age");
    let s = Stream::open(d.0.clone(), settings(200)).unwrap();
    for i in 0..6 {
        s.append(&msg(&format!("{i:0>150}"), None), None);
    }
    assert!(s.info().0 >= 3);
    std::thread::sleep(std::time::Duration::from_millis(30));
    s.set_settings(Settings {
        max_age_ms: Some(10),
        ..settings(200)
    });
    s.append(&msg("fresh", None), None);
    // A closed segment goes once the *next* one starts more than 10 ms ago (so all of it is
    // older): the segments of 0..=4 go, 5's stays until "fresh" is old too.
    assert_eq!(s.info().0, 2);
    let left: Vec<u64> = read_all(&s, 0).iter().map(|e| e.0).collect();
    assert_eq!(left, vec![5, 6]);
}

#[test]
fn recovery_keeps_messages_and_truncates_a_torn_tail() {
    let d = TempDir::new("recover");
    {
        let s = Stream::open(d.0.clone(), settings(2000)).unwrap();
        for i in 0..30 {
            s.append(&msg(&format!("m{i:0>100}"), None), None);
        }
        assert_eq!(s.committed(), 30);
    }
    let s = Stream::open(d.0.clone(), settings(2000)).unwrap();
    assert_eq!((s.committed(), s.message_count()), (30, 30));
    assert_eq!(read_all(&s, 0).len(), 30);
    let (last, len) = {
        let segs = s.segs.lock();
        let b = segs.back().unwrap();
        (b.base, b.len)
    };
    drop(s);
    // A torn record at the tail (a crash mid-write): cut the last record in half.
    let p = segment::path(&d.0, last);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 50).unwrap();
    drop(f);
    let s = Stream::open(d.0.clone(), settings(2000)).unwrap();
    assert_eq!(s.committed(), 29, "the torn record is gone");
    assert_eq!(read_all(&s, 0).len(), 29);
    // New messages continue the numbering.
    s.append(&msg("after", None), None);
    assert_eq!(read_all(&s, 29), vec![(29, "after".to_string())]);
    drop(s);
    // Garbage appended (zeros from a grown file) and a lost index are recovered too.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(&[0u8; 100]).unwrap();
    std::fs::remove_file(index::path(&d.0, last)).unwrap();
    let s = Stream::open(d.0.clone(), settings(2000)).unwrap();
    assert_eq!(s.committed(), 30);
    assert_eq!(read_all(&s, 0).len(), 30);
}

#[test]
fn corrupt_closed_segment_is_skipped_not_fatal() {
    let d = TempDir::new("corrupt");
    let s = Stream::open(d.0.clone(), settings(500)).unwrap();
    for i in 0..20 {
        s.append(&msg(&format!("{i:0>100}"), None), None);
    }
    let first = s.segs.lock().front().unwrap().base;
    let p = segment::path(&d.0, first);
    let mut data = std::fs::read(&p).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&p, &data).unwrap();
    let got = read_all(&s, 0);
    assert!(!got.is_empty() && got.len() < 20, "{}", got.len());
    assert_eq!(got.last().unwrap().0, 19);
}

#[test]
fn filter_values_are_stored() {
    let d = TempDir::new("filter");
    let s = Stream::open(d.0.clone(), Settings::default()).unwrap();
    s.append(&msg("a", Some("eu")), None);
    s.append(&msg("b", None), None);
    s.append(&msg("c", Some("us")), None);
    let f = offset::Filter {
        values: vec!["eu".into(), "us".into()],
        match_unfiltered: false,
    };
    let mut c = Cursor::new(s.clone(), 0);
    let got: Vec<u64> = c.read_batch(10, 3, &f).iter().map(|m| m.seq).collect();
    assert_eq!(got, vec![0, 2]);
    let mut c = Cursor::new(s.clone(), 0);
    let f = offset::Filter {
        values: vec!["eu".into()],
        match_unfiltered: true,
    };
    let got: Vec<u64> = c.read_batch(10, 3, &f).iter().map(|m| m.seq).collect();
    assert_eq!(got, vec![0, 1]);
}

#[test]
fn delete_removes_the_files() {
    let d = TempDir::new("delete");
    let s = Stream::open(d.0.clone(), Settings::default()).unwrap();
    s.append(&msg("x", None), None);
    s.delete();
    assert!(!d.0.exists());
    // Writes after delete are ignored, not errors.
    s.append(&msg("y", None), None);
    assert!(!d.0.exists());
}

#[test]
fn one_batch_spans_segments_and_a_retry_writes_nothing_twice() {
    let d = TempDir::new("split");
    let s = Stream::open(d.0.clone(), settings(1000)).unwrap();
    let mut chunk = Chunk::default();
    for o in 0..20u64 {
        let before = chunk.bytes.len();
        let body = format!("{o:0>200}");
        segment::encode(
            &mut chunk.bytes,
            o,
            1,
            None,
            b"",
            b"q",
            b"",
            None,
            body.as_bytes(),
        );
        chunk
            .records
            .push((o, 1, (chunk.bytes.len() - before) as u64));
    }
    s.write_chunk(&chunk).unwrap();
    assert_eq!(s.committed(), 20);
    let (segments, bytes, _) = s.info();
    assert!(segments >= 4, "{segments} segments for one batch");
    s.write_chunk(&chunk).unwrap();
    assert_eq!(s.info().1, bytes, "a retried chunk is not written again");
    assert_eq!(read_all(&s, 0).len(), 20);
}

#[test]
fn a_publisher_set_offset_header_is_replaced() {
    let d = TempDir::new("ownheader");
    let s = Stream::open(d.0.clone(), Settings::default()).unwrap();
    let mut h = amq_protocol::types::FieldTable::default();
    h.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("fake".into()),
    );
    h.insert("keep".into(), AMQPValue::LongInt(7));
    let p = amq_protocol::protocol::basic::AMQPProperties::default().with_headers(h);
    let (props, _) = cookie_factory::gen(
        amq_protocol::protocol::basic::gen_properties(&p),
        Vec::new(),
    )
    .unwrap();
    s.append(&msg("a", None), None);
    let m = Message::new(
        ShortStr::from_static(""),
        ShortStr::from_static("q"),
        props.into(),
        bytes::Bytes::from_static(b"b"),
    );
    s.append(&m, None);
    let mut c = Cursor::new(s.clone(), 1);
    let e = c.next_entry(2).unwrap();
    let h = crate::protocol::properties::headers(&e.properties).unwrap();
    assert_eq!(
        h.inner().get("x-stream-offset"),
        Some(&AMQPValue::LongLongInt(1))
    );
    assert_eq!(h.inner().get("keep"), Some(&AMQPValue::LongInt(7)));
}

/// The records and the file of the active segment: (records' length, file size).
fn active_sizes(s: &Arc<Stream>) -> (u64, u64) {
    let f = s.files.lock();
    let (_, file) = f.active.as_ref().unwrap();
    (f.active_len, file.metadata().unwrap().len())
}

#[test]
fn preallocated_tail_is_the_end_and_closed_segments_are_cut() {
    let d = TempDir::new("prealloc");
    // Segments of 4 MB: the active one is zero-filled ahead of the writes.
    let s = Stream::open(d.0.clone(), settings(4 << 20)).unwrap();
    for i in 0..10 {
        s.append(&msg(&format!("m{i}"), None), None);
    }
    let (len, size) = active_sizes(&s);
    assert!(size > len, "zero-filled ahead: {len} of {size}");
    assert_eq!(s.info().1, len, "management counts records, not the file");
    let last = s.segs.lock().back().unwrap().base;
    drop(s);
    // Reopened (a crash: nothing cut the tail): the zeros are the end, not damage.
    let s = Stream::open(d.0.clone(), settings(4 << 20)).unwrap();
    assert_eq!((s.committed(), s.info().1), (10, len));
    s.append(&msg("m10", None), None);
    assert_eq!(read_all(&s, 0).len(), 11);
    drop(s);
    // A torn record followed by zeros: cut there, the earlier records kept.
    let p = segment::path(&d.0, last);
    let s = Stream::open(d.0.clone(), settings(4 << 20)).unwrap();
    let (len, _) = active_sizes(&s);
    drop(s);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 20], len - 20).unwrap();
    drop(f);
    std::fs::remove_file(index::path(&d.0, last)).unwrap();
    let s = Stream::open(d.0.clone(), settings(4 << 20)).unwrap();
    assert_eq!(s.committed(), 10, "the torn record is gone");
    assert_eq!(read_all(&s, 0).len(), 10);
    let (len, size) = active_sizes(&s);
    assert_eq!(len, size, "cut at the damage");
    drop(s);
    // Bytes after a zero header are damage, not a clean end.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len + 4096).unwrap();
    f.write_all_at(b"junk", len + 100).unwrap();
    drop(f);
    let s = Stream::open(d.0.clone(), settings(4 << 20)).unwrap();
    assert_eq!(s.committed(), 10);
    let (_, size) = active_sizes(&s);
    assert_eq!(size, len, "junk after zeros dropped");
}

#[test]
fn rolled_segments_lose_their_zero_tail_and_retention_counts_records() {
    let d = TempDir::new("prealloc-roll");
    let mut st = settings(3000);
    st.max_bytes = Some(7000);
    let s = Stream::open(d.0.clone(), st).unwrap();
    for i in 0..100 {
        s.append(&msg(&format!("m{i:0>100}"), None), None);
    }
    let segs = s.segs.lock().clone();
    assert!(segs.len() >= 2, "{} segments", segs.len());
    for seg in segs.iter().take(segs.len() - 1) {
        let size = std::fs::metadata(segment::path(&d.0, seg.base))
            .unwrap()
            .len();
        assert_eq!(size, seg.len, "a closed segment holds records only");
    }
    // Retention by real bytes: every closed segment is ~3000 bytes, so 7000 keeps 2-3 of them.
    let total: u64 = segs.iter().map(|s| s.len).sum();
    assert!(total <= 7000 + 3200, "{total}");
    assert_eq!(s.info().1, total);
    let (len, size) = active_sizes(&s);
    assert!(size >= len);
    drop(s);
    let s = Stream::open(d.0.clone(), st).unwrap();
    assert_eq!(s.committed(), 100);
    assert_eq!(s.info().1, total);
}

#[test]
fn a_reader_at_the_tail_sees_records_written_over_the_zero_tail() {
    let d = TempDir::new("prealloc-tail");
    let s = Stream::open(d.0.clone(), settings(4 << 20)).unwrap();
    s.append(&msg("a", None), None);
    // The cursor's read-ahead buffer now holds the zeros after the first record.
    let mut c = Cursor::new(s.clone(), 0);
    assert_eq!(c.next_entry(s.committed()).map(|e| e.offset), Some(0));
    assert!(c.next_entry(s.committed()).is_none());
    for i in 0..5 {
        s.append(&msg(&format!("b{i}"), None), None);
    }
    let got: Vec<u64> = std::iter::from_fn(|| c.next_entry(s.committed()))
        .map(|e| e.offset)
        .collect();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
}
