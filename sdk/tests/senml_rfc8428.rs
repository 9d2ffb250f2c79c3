//! RFC 8428 (SenML) conformance: the examples of §5 and the CBOR bytes of §6, round trips,
//! and rejection of bad input.
//!
//! The JSON texts and the §6 hex dump are copied from the text of RFC 8428 (as published by
//! the RFC Editor, mirrored in the IETF CoRE working group's `senml-spec` repository).

// Test helpers outside `#[test]` functions: panicking on a broken expectation is their job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use v6iot_sdk::senml::{
    self, PackBuilder, Record, ResolvedRecord, SenmlError, Value, from_cbor, from_json, resolve,
    to_cbor, to_json,
};

/// A "now" for resolving relative times (2024-01-01T00:00:00Z).
const NOW: f64 = 1_704_067_200.0;

// ---------------------------------------------------------------------------------------------
// The RFC's examples, verbatim.

/// RFC 8428 §5.1.1, "Single Data Point".
const RFC_5_1_1: &str = r#"
   [
     {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
   ]
"#;

/// RFC 8428 §5.1.2, "Multiple Data Points", first example (voltage and current "now").
const RFC_5_1_2_NOW: &str = r#"
[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]
"#;

/// RFC 8428 §5.1.2, second example: the pack that §6 shows in CBOR.
const RFC_5_1_2_MULTIPLE: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
      "bu":"A","bver":5,
      "n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
   ]
"#;

/// RFC 8428 §5.1.2, the SensML stream example. The RFC elides the tail with "..."; this is
/// the part shown, closed after the last record shown.
const RFC_5_1_2_STREAM_HEAD: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
      "bu":"%RH","v":21.2},
     {"t":10,"v":21.3},
     {"t":20,"v":21.4},
     {"t":30,"v":21.4},
     {"t":40,"v":21.5},
     {"t":50,"v":21.5},
     {"t":60,"v":21.5},
     {"t":70,"v":21.6},
     {"t":80,"v":21.7}
   ]
"#;

/// RFC 8428 §5.1.3, "Multiple Measurements".
const RFC_5_1_3: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
      "bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
   ]
"#;

/// RFC 8428 §5.1.4, "Resolved Data": §5.1.3 in resolved form.
const RFC_5_1_4: &str = r#"
   [
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
      "v":20},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
      "v":24.30621},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
      "v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
      "v":20.3},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
      "v":24.30622},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
      "v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
      "v":20.7},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
      "v":24.30623},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
      "v":60.07966},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
      "v":98},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
      "v":21.2},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
      "v":24.30628},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
      "v":60.07967}
   ]
"#;

/// RFC 8428 §5.1.5, "Multiple Data Types".
const RFC_5_1_5: &str = r#"
  [
    {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
    {"n":"label","vs":"Machine Room"},
    {"n":"open","vb":false},
    {"n":"nfv-reader","vd":"aGkgCg"}
  ]
"#;

/// RFC 8428 §5.1.6, "Collection of Resources".
const RFC_5_1_6: &str = r#"
   [
     {"bn":"2001:db8::2/","bt":1.320078429e+09,
      "n":"temperature","u":"Cel","v":25.2},
     {"n":"humidity","u":"%RH","v":30},
     {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
     {"n":"humidity","u":"%RH","v":67}
   ]
"#;

/// RFC 8428 §5.1.7, "Setting an Actuator": the thermostat.
const RFC_5_1_7_THERMOSTAT: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a01080063:"},
     {"n":"temp","u":"Cel","v":23.1},
     {"n":"heat","u":"/","v":1},
     {"n":"fan","u":"/","v":0}
   ]
"#;

/// RFC 8428 §5.1.7: two lights turned on.
const RFC_5_1_7_LIGHTS_ON: &str = r#"
   [
     {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},
     {"n":"2001:db8::4","v":1}
   ]
"#;

/// RFC 8428 §5.1.7: two lights dimmed, then turned off 100 ms later.
const RFC_5_1_7_LIGHTS_OFF: &str = r#"
   [
     {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
     {"n":"2001:db8::4","v":0.5},
     {"n":"2001:db8::3","t":0.1,"v":0},
     {"n":"2001:db8::4","t":0.1,"v":0}
   ]
"#;

/// RFC 8428 §6: "a dump of the CBOR example for the same sensor measurement as in
/// Section 5.1.2" (the second, multiple-datapoint example), verbatim.
const RFC_6_CBOR_DUMP: &str = r##"
 0000 87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a |..!x.urn:dev:ow:|
 0010 31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a |10e2073a0108006:|
 0020 22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00 |".A...[..b#aA ..|
 0030 67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06 |gvoltage.aV..@^.|
 0040 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06 |fffff..gcurrent.|
 0050 24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75 |$..?.333333..gcu|
 0060 72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc |rrent.#..?......|
 0070 cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f |...gcurrent."..?|
 0080 f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e |.ffffff..gcurren|
 0090 74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e |t.!..>...gcurren|
 00a0 74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67 |t. ..?.........g|
 00b0 63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33 |current....?.333|
 00c0 33 33 33                                        |333|
 00c3
"##;

/// The bytes of a hex dump in the RFC's layout, checking each line's offset.
fn dump_bytes(dump: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in dump.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let hex = line.split('|').next().unwrap();
        let mut tokens = hex.split_whitespace();
        let offset = usize::from_str_radix(tokens.next().unwrap(), 16).unwrap();
        assert_eq!(offset, bytes.len(), "dump offset of line {line:?}");
        bytes.extend(tokens.map(|t| u8::from_str_radix(t, 16).unwrap()));
    }
    bytes
}

fn rfc6_cbor() -> Vec<u8> {
    dump_bytes(RFC_6_CBOR_DUMP)
}

fn json(text: &str) -> Vec<Record> {
    from_json(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Debug text shows every f64 bit-exactly (including -0.0), unlike `==`.
fn exact<T: std::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

fn float(r: &ResolvedRecord) -> f64 {
    r.value.as_ref().and_then(Value::as_f64).unwrap()
}

fn all_examples() -> [&'static str; 11] {
    [
        RFC_5_1_1,
        RFC_5_1_2_NOW,
        RFC_5_1_2_MULTIPLE,
        RFC_5_1_2_STREAM_HEAD,
        RFC_5_1_3,
        RFC_5_1_4,
        RFC_5_1_5,
        RFC_5_1_6,
        RFC_5_1_7_THERMOSTAT,
        RFC_5_1_7_LIGHTS_ON,
        RFC_5_1_7_LIGHTS_OFF,
    ]
}

// ---------------------------------------------------------------------------------------------
// §6: the CBOR bytes.

#[test]
fn rfc6_dump_is_195_bytes() {
    assert_eq!(rfc6_cbor().len(), 0xc3);
}

#[test]
fn rfc6_cbor_decodes_to_the_records_of_its_diagnostic_notation() {
    let pack = from_cbor(&rfc6_cbor()).unwrap();
    assert_eq!(pack.len(), 7);
    let first = &pack[0];
    assert_eq!(first.bn.as_deref(), Some("urn:dev:ow:10e2073a0108006:"));
    assert_eq!(first.bt, Some(1_276_020_076.001));
    assert_eq!(first.bu.as_deref(), Some("A"));
    assert_eq!(first.bver, Some(5));
    assert_eq!(first.n.as_deref(), Some("voltage"));
    assert_eq!(first.u.as_deref(), Some("V"));
    assert_eq!(first.v, Some(120.1));
    let rest: Vec<(f64, f64)> = pack[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.n.as_deref(), Some("current"));
            (r.t.unwrap(), r.v.unwrap())
        })
        .collect();
    // Times are CBOR integers (6: -5 .. 6: 0); 1.5 is a half-precision float (f9 3e 00).
    assert_eq!(
        rest,
        [
            (-5.0, 1.2),
            (-4.0, 1.3),
            (-3.0, 1.4),
            (-2.0, 1.5),
            (-1.0, 1.6),
            (0.0, 1.7)
        ]
    );
}

#[test]
fn rfc6_cbor_and_rfc5_1_2_json_give_the_same_records() {
    let from_bytes = from_cbor(&rfc6_cbor()).unwrap();
    let mut from_text = json(RFC_5_1_2_MULTIPLE);
    // The one difference in the RFC: the JSON's last record has no "t", the CBOR has 6: 0.
    assert_eq!(from_text[6].t, None);
    assert_eq!(from_bytes[6].t, Some(0.0));
    // The JSON literal 1.276020076001e+09 is the same double as the CBOR's fb 41 d3 03 a1 ...
    assert_eq!(
        from_text[0].bt.unwrap().to_bits(),
        from_bytes[0].bt.unwrap().to_bits()
    );
    from_text[6].t = Some(0.0);
    assert_eq!(exact(&from_text), exact(&from_bytes));
}

#[test]
fn rfc6_cbor_and_rfc5_1_2_json_resolve_alike() {
    let a = resolve(&from_cbor(&rfc6_cbor()).unwrap(), NOW).unwrap();
    let b = resolve(&json(RFC_5_1_2_MULTIPLE), NOW).unwrap();
    assert_eq!(exact(&a), exact(&b));
    // Chronological: the five earlier currents, then voltage and the last current at bt.
    let bt = 1_276_020_076.001;
    let summary: Vec<(&str, Option<&str>, f64, f64)> = a
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_deref(), r.time, float(r)))
        .collect();
    let current = "urn:dev:ow:10e2073a0108006:current";
    let voltage = "urn:dev:ow:10e2073a0108006:voltage";
    assert_eq!(
        summary,
        [
            (current, Some("A"), bt - 5.0, 1.2),
            (current, Some("A"), bt - 4.0, 1.3),
            (current, Some("A"), bt - 3.0, 1.4),
            (current, Some("A"), bt - 2.0, 1.5),
            (current, Some("A"), bt - 1.0, 1.6),
            (voltage, Some("V"), bt, 120.1),
            (current, Some("A"), bt, 1.7),
        ]
    );
}

#[test]
fn rfc6_cbor_reencodes_byte_for_byte() {
    let bytes = rfc6_cbor();
    assert_eq!(to_cbor(&from_cbor(&bytes).unwrap()).unwrap(), bytes);
}

#[test]
fn rfc5_1_2_json_encodes_to_rfc6_cbor_once_t0_is_explicit() {
    let mut pack = json(RFC_5_1_2_MULTIPLE);
    pack[6].t = Some(0.0);
    assert_eq!(to_cbor(&pack).unwrap(), rfc6_cbor());
}

// ---------------------------------------------------------------------------------------------
// §5: the JSON examples and their resolution.

#[test]
fn rfc5_1_1_single_datapoint_is_now() {
    let r = resolve(&json(RFC_5_1_1), NOW).unwrap();
    assert_eq!(
        r,
        [ResolvedRecord {
            name: "urn:dev:ow:10e2073a01080063".into(),
            unit: Some("Cel".into()),
            value: Some(Value::Float(23.1)),
            sum: None,
            time: NOW,
            update_time: None,
        }]
    );
}

#[test]
fn rfc5_1_2_voltage_and_current_now() {
    let r = resolve(&json(RFC_5_1_2_NOW), NOW).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_deref(), float(r), r.time))
        .collect();
    assert_eq!(
        got,
        [
            ("urn:dev:ow:10e2073a01080063:voltage", Some("V"), 120.1, NOW),
            ("urn:dev:ow:10e2073a01080063:current", Some("A"), 1.2, NOW),
        ]
    );
}

#[test]
fn rfc5_1_2_stream_times_count_from_base_time() {
    let r = resolve(&json(RFC_5_1_2_STREAM_HEAD), NOW).unwrap();
    assert_eq!(r.len(), 9);
    for (i, rec) in r.iter().enumerate() {
        assert_eq!(rec.name, "urn:dev:ow:10e2073a01080063");
        assert_eq!(rec.unit.as_deref(), Some("%RH"));
        assert_eq!(rec.time, 1_320_067_464.0 + 10.0 * i as f64);
    }
    let values: Vec<f64> = r.iter().map(float).collect();
    assert_eq!(
        values,
        [21.2, 21.3, 21.4, 21.4, 21.5, 21.5, 21.5, 21.6, 21.7]
    );
}

#[test]
fn rfc5_1_3_resolves_to_rfc5_1_4() {
    let resolved = resolve(&json(RFC_5_1_3), NOW).unwrap();
    let expected = json(RFC_5_1_4);
    let as_records: Vec<Record> = resolved.iter().map(Record::from).collect();
    assert_eq!(exact(&as_records), exact(&expected));
    // And the resolved form is a fixed point of resolution.
    assert_eq!(exact(&resolve(&expected, NOW).unwrap()), exact(&resolved));
}

#[test]
fn rfc5_1_5_multiple_data_types() {
    let r = resolve(&json(RFC_5_1_5), NOW).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.value.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("urn:dev:ow:10e2073a01080063:temp", Some(Value::Float(23.1))),
            (
                "urn:dev:ow:10e2073a01080063:label",
                Some(Value::String("Machine Room".into()))
            ),
            ("urn:dev:ow:10e2073a01080063:open", Some(Value::Bool(false))),
            (
                "urn:dev:ow:10e2073a01080063:nfv-reader",
                Some(Value::Data(b"hi \n".to_vec()))
            ),
        ]
    );
    assert_eq!(r[0].unit.as_deref(), Some("Cel"));
    assert!(r[1..].iter().all(|r| r.unit.is_none()));
}

#[test]
fn rfc5_1_6_last_record_uses_third_base_name_and_first_base_time() {
    let r = resolve(&json(RFC_5_1_6), NOW).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_deref(), float(r), r.time))
        .collect();
    let bt = 1_320_078_429.0;
    assert_eq!(
        got,
        [
            ("2001:db8::2/temperature", Some("Cel"), 25.2, bt),
            ("2001:db8::2/humidity", Some("%RH"), 30.0, bt),
            ("2001:db8::1/temperature", Some("Cel"), 12.3, bt),
            ("2001:db8::1/humidity", Some("%RH"), 67.0, bt),
        ]
    );
}

#[test]
fn rfc5_1_7_thermostat_base_only_record_yields_nothing() {
    let r = resolve(&json(RFC_5_1_7_THERMOSTAT), NOW).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_deref(), float(r)))
        .collect();
    assert_eq!(
        got,
        [
            ("urn:dev:ow:10e2073a01080063:temp", Some("Cel"), 23.1),
            ("urn:dev:ow:10e2073a01080063:heat", Some("/"), 1.0),
            ("urn:dev:ow:10e2073a01080063:fan", Some("/"), 0.0),
        ]
    );
}

#[test]
fn rfc5_1_7_lights() {
    let bt = 1_320_078_429.0;
    let on = resolve(&json(RFC_5_1_7_LIGHTS_ON), NOW).unwrap();
    let got: Vec<_> = on
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_deref(), float(r), r.time))
        .collect();
    assert_eq!(
        got,
        [
            ("2001:db8::3", Some("/"), 1.0, bt),
            ("2001:db8::4", Some("/"), 1.0, bt)
        ]
    );
    let off = resolve(&json(RFC_5_1_7_LIGHTS_OFF), NOW).unwrap();
    let got: Vec<_> = off
        .iter()
        .map(|r| (r.name.as_str(), float(r), r.time))
        .collect();
    assert_eq!(
        got,
        [
            ("2001:db8::3", 0.5, bt),
            ("2001:db8::4", 0.5, bt),
            ("2001:db8::3", 0.0, bt + 0.1),
            ("2001:db8::4", 0.0, bt + 0.1),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Resolution rules beyond the examples.

#[test]
fn relative_times_use_the_given_now() {
    let pack = json(r#"[{"n":"a","v":1,"t":-30},{"n":"b","v":1,"bt":10,"t":5}]"#);
    let r = resolve(&pack, NOW).unwrap();
    assert_eq!(r[0].time, NOW - 30.0);
    assert_eq!(r[1].time, NOW + 15.0);
    // bt + t reaching 2^28 is absolute.
    let pack = json(r#"[{"n":"a","v":1,"bt":268435455,"t":1}]"#);
    assert_eq!(resolve(&pack, NOW).unwrap()[0].time, 268_435_456.0);
}

#[test]
fn base_value_and_base_sum_are_added() {
    let pack = json(
        r#"[{"bn":"m:","bv":100,"bs":1000,"n":"a","v":1,"s":2},
            {"n":"b"},
            {"n":"c","vs":"x"},
            {"n":"d","s":5,"bv":0.5,"v":0.25}]"#,
    );
    let r = resolve(&pack, NOW).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.value.clone(), r.sum))
        .collect();
    assert_eq!(
        got,
        [
            ("m:a", Some(Value::Float(101.0)), Some(1002.0)),
            ("m:b", Some(Value::Float(100.0)), Some(1000.0)),
            ("m:c", Some(Value::String("x".into())), Some(1000.0)),
            ("m:d", Some(Value::Float(0.75)), Some(1005.0)),
        ]
    );
}

#[test]
fn sum_alone_is_enough_and_update_time_is_kept() {
    let pack = json(r#"[{"n":"energy","u":"W","s":3600,"ut":60}]"#);
    let r = resolve(&pack, NOW).unwrap();
    assert_eq!(r[0].value, None);
    assert_eq!(r[0].sum, Some(3600.0));
    assert_eq!(r[0].update_time, Some(60.0));
}

#[test]
fn resolution_sorts_by_time_stably() {
    let pack = json(r#"[{"n":"a","v":1,"t":-1},{"n":"b","v":2,"t":-2},{"n":"c","v":3,"t":-1}]"#);
    let names: Vec<String> = resolve(&pack, NOW)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["b", "a", "c"]);
}

#[test]
fn resolution_errors() {
    let err = |text: &str| resolve(&json(text), NOW).unwrap_err();
    assert_eq!(
        err(r#"[{"n":"ok","v":1},{"bn":"bad name ","n":"x","v":1}]"#).to_string(),
        "record 1: name `bad name x` has invalid characters"
    );
    assert!(matches!(
        err(r#"[{"n":"-leading","v":1}]"#),
        SenmlError::InvalidName { record: 0, .. }
    ));
    assert!(matches!(
        err(r#"[{"n":"caf\u00e9","v":1}]"#),
        SenmlError::InvalidName { record: 0, .. }
    ));
    assert_eq!(err(r#"[{"v":1}]"#), SenmlError::MissingName { record: 0 });
    assert_eq!(
        err(r#"[{"n":"a","v":1},{"n":"b","u":"Cel"}]"#),
        SenmlError::MissingValue { record: 1 }
    );
    assert_eq!(
        err(r#"[{"n":"a","bt":1e308,"t":1e308,"v":1}]"#),
        SenmlError::Overflow {
            record: 0,
            field: "t"
        }
    );
    assert_eq!(
        err(r#"[{"n":"a","bv":1e308,"v":1e308}]"#),
        SenmlError::Overflow {
            record: 0,
            field: "v"
        }
    );
    assert_eq!(
        resolve(&json(RFC_5_1_1), f64::NAN).unwrap_err(),
        SenmlError::InvalidNow
    );
    // resolve validates packs built in code, too.
    let two = Record {
        vb: Some(true),
        ..Record::measurement("x", "Cel", 1.0)
    };
    assert_eq!(
        resolve(&[two], NOW).unwrap_err(),
        SenmlError::MultipleValues { record: 0 }
    );
}

#[test]
fn name_rules_of_section_4_5_1() {
    for ok in [
        "a",
        "0",
        "urn:dev:ow:10e2073a01080063",
        "2001:db8::1/x",
        "A-b_c.d/e:f",
    ] {
        assert!(senml::is_valid_name(ok), "{ok}");
    }
    for bad in [
        "", "-a", ":a", "_a", ".a", "/a", "a b", "a+b", "a%", "é", "a\n",
    ] {
        assert!(!senml::is_valid_name(bad), "{bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips and encoding details.

#[test]
fn json_round_trip_of_every_example() {
    for text in all_examples() {
        let pack = json(text);
        let encoded = to_json(&pack).unwrap();
        let back = json(&encoded);
        assert_eq!(exact(&back), exact(&pack), "{text}");
        // Our own output is a fixed point.
        assert_eq!(to_json(&back).unwrap(), encoded);
    }
}

#[test]
fn cbor_round_trip_of_every_example() {
    for text in all_examples() {
        let pack = json(text);
        let bytes = to_cbor(&pack).unwrap();
        let back = from_cbor(&bytes).unwrap();
        assert_eq!(exact(&back), exact(&pack), "{text}");
        assert_eq!(to_cbor(&back).unwrap(), bytes);
        assert_eq!(
            exact(&resolve(&back, NOW).unwrap()),
            exact(&resolve(&pack, NOW).unwrap())
        );
    }
}

#[test]
fn json_output_is_compact_and_in_rfc_field_order() {
    let pack = json(RFC_5_1_2_MULTIPLE);
    let text = to_json(&pack).unwrap();
    assert!(text.starts_with(
        r#"[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1276020076.001,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},{"n":"current","t":-5,"v":1.2},"#
    ), "{text}");
    assert!(text.ends_with(r#"{"n":"current","v":1.7}]"#), "{text}");
    let vd = to_json(&json(RFC_5_1_5)).unwrap();
    assert!(vd.contains(r#""vd":"aGkgCg""#), "{vd}");
}

#[test]
fn cbor_numbers_take_the_smallest_exact_form() {
    let enc = |v: f64| {
        let bytes = to_cbor(&[Record {
            v: Some(v),
            ..Record::default()
        }])
        .unwrap();
        // 81 a1 02 <number>
        assert_eq!(bytes[..3], [0x81, 0xa1, 0x02]);
        let back = from_cbor(&bytes).unwrap();
        assert_eq!(back[0].v.unwrap().to_bits(), v.to_bits());
        bytes[3..].to_vec()
    };
    assert_eq!(enc(20.0), [0x14]);
    assert_eq!(enc(-5.0), [0x24]);
    assert_eq!(enc(1000.0), [0x19, 0x03, 0xe8]);
    assert_eq!(enc(1.5), [0xf9, 0x3e, 0x00]);
    assert_eq!(enc(-0.0), [0xf9, 0x80, 0x00]);
    assert_eq!(enc(0.1f32 as f64), [0xfa, 0x3d, 0xcc, 0xcc, 0xcd]);
    assert_eq!(enc(120.1)[0], 0xfb);
    // Integral but beyond 2^53: kept as a float so it stays exact.
    assert_eq!(enc(2f64.powi(60))[0], 0xfa);
    assert_eq!(enc(2f64.powi(54) + 4.0)[0], 0xfb);
}

#[test]
fn cbor_data_value_is_a_byte_string() {
    let bytes = to_cbor(&[Record::data_value("d", vec![0xde, 0xad])]).unwrap();
    // [{0: "d", 8: h'dead'}]
    assert_eq!(
        bytes,
        [0x81, 0xa2, 0x00, 0x61, b'd', 0x08, 0x42, 0xde, 0xad]
    );
}

#[test]
fn cbor_indefinite_length_pack_is_accepted() {
    // [_ {0: "a", 2: 1}] : the SensML streaming form.
    let bytes = [0x9f, 0xa2, 0x00, 0x61, b'a', 0x02, 0x01, 0xff];
    assert_eq!(
        from_cbor(&bytes).unwrap(),
        [Record {
            n: Some("a".into()),
            v: Some(1.0),
            ..Record::default()
        }]
    );
}

#[test]
fn builder_makes_a_device_pack() {
    let pack = PackBuilder::new()
        .base_name("urn:dev:mac:0024befffe804ff1:")
        .base_time(1_700_000_000.0)
        .base_unit("Cel")
        .record(Record::measurement("t1", "Cel", 21.5))
        .record(Record::measurement("rh", "%RH", 40.0).with_time(1.0))
        .record(Record::bool_value("door", true).with_time(2.0))
        .record(Record::string_value("state", "run").with_update_time(60.0))
        .record(Record::measurement("p", "W", 5.0).with_sum(3600.0))
        .build();
    let bytes = to_cbor(&pack).unwrap();
    assert_eq!(from_cbor(&bytes).unwrap(), pack);
    let r = resolve(&pack, NOW).unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0].name, "urn:dev:mac:0024befffe804ff1:t1");
    assert_eq!(r[0].time, 1_700_000_000.0);
    assert_eq!(
        r.iter().find(|r| r.name.ends_with("rh")).unwrap().time,
        1_700_000_001.0
    );
    // Only the first record carries base fields.
    assert!(pack[1..].iter().all(|r| r.bn.is_none() && r.bt.is_none()));

    let base_only = PackBuilder::new().base_name("x:").build();
    assert_eq!(
        base_only,
        [Record {
            bn: Some("x:".into()),
            ..Record::default()
        }]
    );
    assert!(PackBuilder::new().build().is_empty());
}

#[test]
fn content_formats() {
    assert_eq!(senml::CONTENT_FORMAT_JSON, 110);
    assert_eq!(senml::CONTENT_FORMAT_CBOR, 112);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

fn json_err(text: &str) -> SenmlError {
    from_json(text.as_bytes()).unwrap_err()
}

fn cbor_err(bytes: &[u8]) -> SenmlError {
    from_cbor(bytes).unwrap_err()
}

#[test]
fn top_level_must_be_an_array_of_maps() {
    for text in [r#"{"n":"a","v":1}"#, "1", "\"x\"", "null", "true"] {
        assert_eq!(json_err(text), SenmlError::NotAnArray, "{text}");
    }
    assert_eq!(
        json_err(r#"{"n":"a","v":1}"#).to_string(),
        "not a SenML pack: top level is not an array"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":1}, [1]]"#),
        SenmlError::NotAMap { record: 1 }
    );
    assert_eq!(json_err(r#"[3]"#), SenmlError::NotAMap { record: 0 });
    // CBOR: {0: "a"} and [1].
    assert_eq!(cbor_err(&[0xa1, 0x00, 0x61, b'a']), SenmlError::NotAnArray);
    assert_eq!(cbor_err(&[0x81, 0x01]), SenmlError::NotAMap { record: 0 });
    assert_eq!(cbor_err(&[0x81, 0x80]), SenmlError::NotAMap { record: 0 });
    assert_eq!(from_json(b"[]").unwrap(), []);
    assert_eq!(from_cbor(&[0x80]).unwrap(), []);
}

#[test]
fn wrong_types_name_record_and_field() {
    assert_eq!(
        json_err(r#"[{"n":"a","v":1},{"n":"b","v":2},{"n":"c","v":"3"}]"#).to_string(),
        "record 2: field `v` is not a number"
    );
    assert_eq!(
        json_err(r#"[{"n":1,"v":1}]"#).to_string(),
        "record 0: field `n` is not a text string"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","vb":"true"}]"#).to_string(),
        "record 0: field `vb` is not a boolean"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","vd":"a+b/"}]"#).to_string(),
        "record 0: field `vd` is not base64url text"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","vd":[1,2]}]"#).to_string(),
        "record 0: field `vd` is not base64url text"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":1,"bver":"5"}]"#).to_string(),
        "record 0: field `bver` is not a positive integer"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":1,"bver":5.5}]"#).to_string(),
        "record 0: field `bver` is not a positive integer"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":1,"bver":0}]"#).to_string(),
        "record 0: field `bver` is not a positive integer"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":null}]"#).to_string(),
        "record 0: field `v` is not a number"
    );
    // CBOR: [{0: "a", 2: "x"}], [{0: "a", 2: 1, 4: 1}], [{-1: -5}], [{-1: 5.0}], [{8: "aGk"}]
    assert_eq!(
        cbor_err(&[0x81, 0xa2, 0x00, 0x61, b'a', 0x02, 0x61, b'x']).to_string(),
        "record 0: field `v` is not a number"
    );
    assert_eq!(
        cbor_err(&[0x81, 0xa2, 0x00, 0x61, b'a', 0x04, 0x01]).to_string(),
        "record 0: field `vb` is not a boolean"
    );
    assert_eq!(
        cbor_err(&[0x81, 0xa1, 0x20, 0x24]).to_string(),
        "record 0: field `bver` is not a positive integer"
    );
    assert_eq!(
        cbor_err(&[0x81, 0xa1, 0x20, 0xf9, 0x45, 0x00]).to_string(),
        "record 0: field `bver` is not a positive integer"
    );
    assert_eq!(
        cbor_err(&[0x81, 0xa1, 0x08, 0x63, b'a', b'G', b'k']).to_string(),
        "record 0: field `vd` is not a byte string"
    );
    // Decimal fraction (tag 4) is not supported: 4([-1, 15]) for 1.5.
    assert!(matches!(
        cbor_err(&[0x81, 0xa1, 0x02, 0xc4, 0x82, 0x20, 0x0f]),
        SenmlError::InvalidField {
            record: 0,
            field: "v",
            ..
        }
    ));
}

#[test]
fn non_finite_numbers_are_rejected() {
    // [{2: NaN}], [{6: +inf}] as half floats
    assert_eq!(
        cbor_err(&[0x81, 0xa1, 0x02, 0xf9, 0x7e, 0x00]).to_string(),
        "record 0: field `v` is not a finite number"
    );
    assert_eq!(
        cbor_err(&[0x81, 0xa1, 0x06, 0xf9, 0x7c, 0x00]).to_string(),
        "record 0: field `t` is not a finite number"
    );
    assert!(matches!(
        json_err(r#"[{"n":"a","v":1e999}]"#),
        SenmlError::Json(_)
    ));
    assert!(matches!(
        json_err(r#"[{"n":"a","v":NaN}]"#),
        SenmlError::Json(_)
    ));
}

#[test]
fn more_than_one_value_field_is_rejected() {
    assert_eq!(
        json_err(r#"[{"n":"a","v":1,"vs":"1"}]"#).to_string(),
        "record 0: more than one value field"
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":1},{"n":"b","vb":true,"vd":"AA"}]"#),
        SenmlError::MultipleValues { record: 1 }
    );
    // [{2: 1, 3: "1"}]
    assert_eq!(
        cbor_err(&[0x81, 0xa2, 0x02, 0x01, 0x03, 0x61, b'1']),
        SenmlError::MultipleValues { record: 0 }
    );
}

#[test]
fn duplicate_fields_are_rejected() {
    assert_eq!(
        json_err(r#"[{"n":"a","v":1,"v":2}]"#).to_string(),
        "record 0: field `v` appears more than once"
    );
    // [{2: 1, 2: 2}]
    assert_eq!(
        cbor_err(&[0x81, 0xa2, 0x02, 0x01, 0x02, 0x02]),
        SenmlError::DuplicateField {
            record: 0,
            field: "v"
        }
    );
}

#[test]
fn unknown_labels_are_ignored_unless_they_end_in_underscore() {
    let pack = json(r#"[{"n":"a","v":1,"foo":{"deep":[1,2,{"x":null}]},"foo":3}]"#);
    assert_eq!(
        pack,
        [Record {
            n: Some("a".into()),
            v: Some(1.0),
            ..Record::default()
        }]
    );
    assert_eq!(
        json_err(r#"[{"n":"a","v":1},{"n":"b","v":1,"ttl_":5}]"#).to_string(),
        "record 1: unknown field `ttl_` must be understood (its label ends in `_`)"
    );
    assert!(matches!(
        json_err(r#"[{"n":"a","v":1,"_":5}]"#),
        SenmlError::MustUnderstand { record: 0, .. }
    ));
    // CBOR: unknown integer label 42 and text label "foo" ignored; text "ttl_" rejected.
    let ok = [
        0x81, 0xa3, 0x00, 0x61, b'a', 0x18, 0x2a, 0x01, 0x63, b'f', b'o', b'o', 0xf5,
    ];
    assert_eq!(
        from_cbor(&ok).unwrap(),
        [Record {
            n: Some("a".into()),
            ..Record::default()
        }]
    );
    let bad = [0x81, 0xa1, 0x64, b't', b't', b'l', b'_', 0x05];
    assert_eq!(
        cbor_err(&bad),
        SenmlError::MustUnderstand {
            record: 0,
            label: "ttl_".into()
        }
    );
    // A byte-string label is neither.
    assert_eq!(
        cbor_err(&[0x81, 0xa1, 0x41, 0x00, 0x01]),
        SenmlError::InvalidLabel { record: 0 }
    );
}

#[test]
fn versions() {
    assert_eq!(
        json_err(r#"[{"bver":11,"n":"a","v":1}]"#).to_string(),
        "record 0: SenML version 11 is not supported (newest known is 10)"
    );
    assert_eq!(
        json_err(r#"[{"bver":5,"n":"a","v":1},{"bver":6,"n":"b","v":1}]"#),
        SenmlError::VersionMismatch {
            record: 1,
            version: 6,
            pack_version: 5
        }
    );
    // No bver means 10, so a later bver 5 disagrees; a later bver 10 does not.
    assert_eq!(
        json_err(r#"[{"n":"a","v":1},{"bver":5,"n":"b","v":1}]"#),
        SenmlError::VersionMismatch {
            record: 1,
            version: 5,
            pack_version: 10
        }
    );
    assert!(from_json(br#"[{"n":"a","v":1},{"bver":10,"n":"b","v":1}]"#).is_ok());
    assert!(from_json(br#"[{"bver":5,"n":"a","v":1},{"bver":5,"n":"b","v":1}]"#).is_ok());
}

#[test]
fn malformed_input_is_an_error() {
    assert!(matches!(json_err(""), SenmlError::Json(_)));
    assert!(matches!(json_err("[{\"n\":\"a\""), SenmlError::Json(_)));
    assert!(matches!(json_err("[] []"), SenmlError::Json(_)));
    assert!(matches!(
        from_json(b"[{\"n\":\"\xff\"}]").unwrap_err(),
        SenmlError::Json(_)
    ));
    assert!(matches!(cbor_err(&[]), SenmlError::Cbor(_)));
    assert!(matches!(cbor_err(&[0x80, 0x80]), SenmlError::Cbor(_)));
    // [{0: "\xff"}]: invalid UTF-8 text string.
    assert!(matches!(
        cbor_err(&[0x81, 0xa1, 0x00, 0x61, 0xff]),
        SenmlError::Cbor(_)
    ));
    // An array that claims 2^64-1 elements must not allocate for them.
    let huge = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa0];
    assert!(matches!(cbor_err(&huge), SenmlError::Cbor(_)));
    let huge_text = [
        0x81, 0xa1, 0x00, 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(matches!(cbor_err(&huge_text), SenmlError::Cbor(_)));
}

#[test]
fn every_truncation_of_the_rfc6_bytes_is_an_error() {
    let bytes = rfc6_cbor();
    for len in 0..bytes.len() {
        assert!(from_cbor(&bytes[..len]).is_err(), "prefix of {len} bytes");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        // Nested arrays as the first element: not a map (serde_json skips them without recursing).
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(
            json_err(&text),
            SenmlError::NotAMap { record: 0 } | SenmlError::Json(_)
        ));
        let in_unknown = format!(
            r#"[{{"n":"a","v":1,"x":{}{}}}]"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(matches!(json_err(&in_unknown), SenmlError::Json(_)));
        let mut cbor = vec![0x81; depth];
        cbor.push(0x80);
        assert!(matches!(
            cbor_err(&cbor),
            SenmlError::NotAMap { record: 0 } | SenmlError::Cbor(_)
        ));
        // [{0: "a", 99: [[[...]]]}]
        let mut cbor = vec![0x81, 0xa2, 0x00, 0x61, b'a', 0x18, 99];
        cbor.extend(std::iter::repeat_n(0x81, depth));
        cbor.push(0x80);
        assert!(matches!(cbor_err(&cbor), SenmlError::Cbor(_)));
    }
}

#[test]
fn encoders_refuse_invalid_packs() {
    let two = Record {
        vs: Some("x".into()),
        ..Record::measurement("a", "Cel", 1.0)
    };
    assert_eq!(
        to_cbor(std::slice::from_ref(&two)).unwrap_err(),
        SenmlError::MultipleValues { record: 0 }
    );
    assert_eq!(
        to_json(&[two]).unwrap_err(),
        SenmlError::MultipleValues { record: 0 }
    );
    let nan = Record::measurement("a", "Cel", f64::NAN);
    assert!(matches!(
        to_json(&[nan]).unwrap_err(),
        SenmlError::InvalidField {
            record: 0,
            field: "v",
            ..
        }
    ));
    let v11 = Record {
        bver: Some(11),
        ..Record::measurement("a", "Cel", 1.0)
    };
    assert!(matches!(
        to_cbor(&[v11]).unwrap_err(),
        SenmlError::UnsupportedVersion { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
        (-1000i32..1000).prop_map(|i| f64::from(i) / 8.0),
        Just(-0.0),
        Just(0.1),
        Just(1.276_020_076_001e9),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[A-Za-z0-9][-:./_A-Za-z0-9]{0,12}"]
}

/// Base fields, regular fields and the value fields, as the record generators draw them.
type Drawn = (
    (
        Option<String>,
        Option<f64>,
        Option<String>,
        Option<f64>,
        Option<f64>,
    ),
    (
        Option<String>,
        Option<String>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ),
    (Option<f64>, Option<String>, Option<bool>, Option<Vec<u8>>),
);

/// A record (version unset) from what a generator drew.
fn assemble(((bn, bt, bu, bv, bs), (n, u, s, t, ut), (v, vs, vb, vd)): Drawn) -> Record {
    Record {
        bn,
        bt,
        bu,
        bv,
        bs,
        bver: None,
        n,
        u,
        v,
        vs,
        vb,
        vd,
        s,
        t,
        ut,
    }
}

fn record() -> impl Strategy<Value = Record> {
    let base = (
        proptest::option::of(text()),
        proptest::option::of(finite()),
        proptest::option::of(text()),
        proptest::option::of(finite()),
        proptest::option::of(finite()),
    );
    let regular = (
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(finite()),
        proptest::option::of(finite()),
        proptest::option::of(finite()),
    );
    let value = prop_oneof![
        Just((None, None, None, None)),
        finite().prop_map(|v| (Some(v), None, None, None)),
        any::<String>().prop_map(|s| (None, Some(s), None, None)),
        any::<bool>().prop_map(|b| (None, None, Some(b), None)),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|d| (None, None, None, Some(d))),
    ];
    (base, regular, value).prop_map(assemble)
}

fn pack() -> impl Strategy<Value = Vec<Record>> {
    (
        proptest::collection::vec(record(), 0..8),
        proptest::option::of(1i64..=10),
    )
        .prop_map(|(mut pack, bver)| {
            if let Some(first) = pack.first_mut() {
                first.bver = bver;
            }
            pack
        })
}

proptest! {
    #[test]
    fn prop_cbor_round_trip(pack in pack()) {
        let bytes = to_cbor(&pack).unwrap();
        let back = from_cbor(&bytes).unwrap();
        prop_assert_eq!(exact(&back), exact(&pack));
    }

    #[test]
    fn prop_json_round_trip(pack in pack()) {
        let text = to_json(&pack).unwrap();
        let back = from_json(text.as_bytes()).unwrap();
        prop_assert_eq!(exact(&back), exact(&pack));
    }

    #[test]
    fn prop_json_and_cbor_agree(pack in pack()) {
        let via_json = from_json(&senml::to_json_vec(&pack).unwrap()).unwrap();
        let via_cbor = from_cbor(&to_cbor(&pack).unwrap()).unwrap();
        prop_assert_eq!(exact(&via_json), exact(&via_cbor));
        prop_assert_eq!(
            resolve(&via_json, NOW).map(|r| exact(&r)),
            resolve(&via_cbor, NOW).map(|r| exact(&r))
        );
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(pack) = from_cbor(&bytes) {
            let _ = resolve(&pack, NOW);
            prop_assert!(to_cbor(&pack).is_ok());
        }
        if let Ok(pack) = from_json(&bytes) {
            let _ = resolve(&pack, NOW);
            prop_assert!(to_json(&pack).is_ok());
        }
    }

    #[test]
    fn prop_mutated_cbor_never_panics(
        pack in pack(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = to_cbor(&pack).unwrap();
        if !bytes.is_empty() {
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(pack) = from_cbor(&bytes) {
            let _ = resolve(&pack, NOW);
            let again = from_cbor(&to_cbor(&pack).unwrap()).unwrap();
            prop_assert_eq!(exact(&again), exact(&pack));
        }
    }

    #[test]
    fn prop_mutated_json_never_panics(
        pack in pack(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = senml::to_json_vec(&pack).unwrap();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(pack) = from_json(&bytes) {
            let _ = resolve(&pack, NOW);
            let again = from_json(&senml::to_json_vec(&pack).unwrap()).unwrap();
            prop_assert_eq!(exact(&again), exact(&pack));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `resolve_to_json`, the one-pass path, against the owned one: decode, `resolve`, `to_record`,
// `to_json_vec`.

/// What the owned path gives for `bytes`, with `first` as the first record's first member.
fn owned_path(
    encoding: senml::Encoding,
    bytes: &[u8],
    now: f64,
    first: Option<(&str, &str)>,
) -> Result<Vec<u8>, SenmlError> {
    let pack = match encoding {
        senml::Encoding::Json => from_json(bytes)?,
        _ => from_cbor(bytes)?,
    };
    let resolved = resolve(&pack, now)?;
    let records: Vec<Record> = resolved.iter().map(ResolvedRecord::to_record).collect();
    let json = senml::to_json_vec(&records).unwrap();
    Ok(match first {
        Some((label, text)) if !records.is_empty() => {
            let member = serde_json::to_string(&serde_json::json!({ label: text })).unwrap();
            // `[{` + `"label":"text"` + `,` + the rest of the first record.
            let member = &member[1..member.len() - 1];
            [&b"[{"[..], member.as_bytes(), b",", &json[2..]].concat()
        }
        _ => json,
    })
}

/// The one-pass path for `bytes`, written after a prefix that must stay untouched.
fn one_pass(
    encoding: senml::Encoding,
    bytes: &[u8],
    now: f64,
    first: Option<(&str, &str)>,
) -> Result<Vec<u8>, SenmlError> {
    let mut out = b"prefix".to_vec();
    let result = senml::resolve_to_json(encoding, bytes, now, first, &mut out);
    assert_eq!(&out[..6], b"prefix");
    match result {
        Ok(n) => {
            let json = out.split_off(6);
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value.as_array().map(Vec::len), Some(n));
            Ok(json)
        }
        Err(e) => {
            assert_eq!(out, b"prefix", "nothing written on error");
            Err(e)
        }
    }
}

/// Both paths accept `bytes` or both refuse them; what they write is the same, byte for byte.
fn paths_agree(encoding: senml::Encoding, bytes: &[u8], now: f64) -> Result<bool, String> {
    for first in [None, Some(("rid", "1764150000123")), Some(("x\"\n", "é\\"))] {
        let owned = owned_path(encoding, bytes, now, first);
        let fast = one_pass(encoding, bytes, now, first);
        match (&owned, &fast) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            _ => {
                return Err(format!(
                    "{encoding:?} {:?} (first {first:?}):\n owned    {:?}\n one pass {:?}",
                    String::from_utf8_lossy(bytes),
                    owned.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    fast.map(|b| String::from_utf8_lossy(&b).into_owned()),
                ));
            }
        }
    }
    Ok(owned_path(encoding, bytes, now, None).is_ok())
}

#[test]
fn one_pass_matches_the_owned_path_on_every_example() {
    for text in all_examples() {
        assert_eq!(
            paths_agree(senml::Encoding::Json, text.as_bytes(), NOW),
            Ok(true)
        );
        let cbor = to_cbor(&json(text)).unwrap();
        assert_eq!(paths_agree(senml::Encoding::Cbor, &cbor, NOW), Ok(true));
    }
    assert_eq!(
        paths_agree(senml::Encoding::Cbor, &rfc6_cbor(), NOW),
        Ok(true)
    );
    // §5.1.7's thermostat pack: its first record has base fields only.
    let mut out = Vec::new();
    let n = senml::resolve_to_json(
        senml::Encoding::Json,
        RFC_5_1_7_THERMOSTAT.as_bytes(),
        NOW,
        None,
        &mut out,
    )
    .unwrap();
    assert_eq!(n, resolve(&json(RFC_5_1_7_THERMOSTAT), NOW).unwrap().len());
}

#[test]
fn one_pass_refuses_what_the_owned_path_refuses() {
    let bad_json: &[&str] = &[
        "",
        "{}",
        "[1]",
        "[[]]",
        r#"[{"n":"a"}]"#,
        r#"[{"n":"a","v":1,"v":2}]"#,
        r#"[{"n":"a","v":1,"vs":"x"}]"#,
        r#"[{"n":"a","v":"1"}]"#,
        r#"[{"n":"a","v":1,"x_":0}]"#,
        r#"[{"n":"-a","v":1}]"#,
        r#"[{"n":"a b","v":1}]"#,
        r#"[{"bn":"a","bver":11,"v":1}]"#,
        r#"[{"bn":"a","bver":0,"v":1}]"#,
        r#"[{"bn":"a","bver":-1,"v":1}]"#,
        r#"[{"bn":"a","bver":5.0,"v":1}]"#,
        r#"[{"bn":"a","bver":5,"v":1},{"n":"b","bver":4,"v":1}]"#,
        r#"[{"n":"a","vd":"+/"}]"#,
        r#"[{"n":"a","vd":1}]"#,
        r#"[{"n":"a","v":1e308,"bv":1e308}]"#,
        r#"[{"n":"a","v":1,"t":1e308,"bt":1e308}]"#,
        r#"[{"n":"a","v":1}] x"#,
        r#"[{"n":"a","v":1,"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]"#,
    ];
    for text in bad_json {
        assert_eq!(
            paths_agree(senml::Encoding::Json, text.as_bytes(), NOW),
            Ok(false),
            "{text}"
        );
    }
    let bad_cbor: &[&[u8]] = &[
        &[],
        &[0xa0],
        &[0x81, 0x01],
        &[0x81, 0xa1, 0xf5, 0x01],                   // [{true: 1}]
        &[0x81, 0xa2, 0x00, 0x61, b'a', 0x21, 0x01], // [{0: "a", -2: 1}]
        &[0x81, 0xa1, 0x00, 0x61, 0xff],             // invalid UTF-8
        &[0x81, 0xa2, 0x00, 0x61, b'a', 0x62, b'x', b'_', 0x01], // must-understand
        &[0x81, 0xa3, 0x00, 0x61, b'a', 0x02, 0x01, 0x20, 0x20], // [{0:"a",2:1,-1:-1}]
        &[0x81, 0xa3, 0x00, 0x61, b'a', 0x02, 0x01, 0x02, 0x01], // duplicate v
        &[0x81, 0xa2, 0x00, 0x61, b'a', 0x08, 0x61, b'A'], // vd as text
    ];
    for bytes in bad_cbor {
        assert_eq!(
            paths_agree(senml::Encoding::Cbor, bytes, NOW),
            Ok(false),
            "{bytes:02x?}"
        );
    }
    // Nothing left to write is not an error: `[]`, 0 records.
    for empty in ["[]", "[{}]", r#"[{"bn":"a:","bt":1}]"#] {
        assert_eq!(
            paths_agree(senml::Encoding::Json, empty.as_bytes(), NOW),
            Ok(true)
        );
        assert_eq!(
            one_pass(
                senml::Encoding::Json,
                empty.as_bytes(),
                NOW,
                Some(("rid", "1"))
            )
            .unwrap(),
            b"[]"
        );
    }
    let mut out = Vec::new();
    assert_eq!(
        senml::resolve_to_json(senml::Encoding::Json, b"[]", f64::NAN, None, &mut out),
        Err(SenmlError::InvalidNow)
    );
}

#[test]
fn one_pass_borrows_escaped_and_chunked_strings_correctly() {
    // JSON escapes in names and units; CBOR indefinite-length (chunked) text and byte strings.
    let text = r#"[{"bn":"urn:dev:a\u003a","n":"t\u0031","u":"\"C\"\n","v":1,"vs_x":"\u00e9"},{"n":"d","vd":"AQID"}]"#;
    assert_eq!(
        paths_agree(senml::Encoding::Json, text.as_bytes(), NOW),
        Ok(true)
    );
    // [{-2: (_ "ur", "n:"), 0: "t", 8: (_ h'01', h'0203')}]
    let cbor = [
        0x81, 0xa3, 0x21, 0x7f, 0x62, b'u', b'r', 0x62, b'n', b':', 0xff, 0x00, 0x61, b't', 0x08,
        0x5f, 0x41, 0x01, 0x42, 0x02, 0x03, 0xff,
    ];
    assert_eq!(paths_agree(senml::Encoding::Cbor, &cbor, NOW), Ok(true));
}

/// A record that usually resolves: valid name parts, finite numbers, sometimes a base field.
fn resolvable_record() -> impl Strategy<Value = Record> {
    let name = "[A-Za-z0-9][-:./_A-Za-z0-9]{0,12}";
    let base = (
        proptest::option::weighted(0.3, name),
        proptest::option::weighted(0.3, finite()),
        proptest::option::weighted(0.2, text()),
        proptest::option::weighted(0.2, finite()),
        proptest::option::weighted(0.2, finite()),
    );
    let regular = (
        proptest::option::weighted(0.8, "[-:./_A-Za-z0-9]{0,8}"),
        proptest::option::weighted(0.4, text()),
        proptest::option::weighted(0.2, finite()),
        proptest::option::weighted(0.5, finite()),
        proptest::option::weighted(0.2, finite()),
    );
    let value = prop_oneof![
        4 => finite().prop_map(|v| (Some(v), None, None, None)),
        1 => Just((None, None, None, None)),
        1 => any::<String>().prop_map(|s| (None, Some(s), None, None)),
        1 => any::<bool>().prop_map(|b| (None, None, Some(b), None)),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(|d| (None, None, None, Some(d))),
    ];
    (base, regular, value).prop_map(assemble)
}

fn resolvable_pack() -> impl Strategy<Value = Vec<Record>> {
    (
        proptest::collection::vec(resolvable_record(), 0..6),
        proptest::option::of(1i64..=10),
        "[a-z]{1,6}:",
    )
        .prop_map(|(mut pack, bver, bn)| {
            if let Some(first) = pack.first_mut() {
                first.bver = bver;
                first.bn.get_or_insert(bn);
            }
            pack
        })
}

/// Random edits of `bytes`: some bytes overwritten, maybe cut short.
fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8)], cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn prop_one_pass_matches_the_owned_path(
        pack in resolvable_pack(),
        now in prop_oneof![Just(NOW), finite()],
    ) {
        let cbor = to_cbor(&pack).unwrap();
        let json = senml::to_json_vec(&pack).unwrap();
        let ok_cbor = paths_agree(senml::Encoding::Cbor, &cbor, now).map_err(TestCaseError::fail)?;
        let ok_json = paths_agree(senml::Encoding::Json, &json, now).map_err(TestCaseError::fail)?;
        prop_assert_eq!(ok_cbor, ok_json);
    }

    #[test]
    fn prop_one_pass_matches_the_owned_path_on_mutated_bytes(
        pack in resolvable_pack(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::weighted(0.2, 0usize..200),
    ) {
        let cbor = mutate(to_cbor(&pack).unwrap(), &edits, cut);
        paths_agree(senml::Encoding::Cbor, &cbor, NOW).map_err(TestCaseError::fail)?;
        let json = mutate(senml::to_json_vec(&pack).unwrap(), &edits, cut);
        paths_agree(senml::Encoding::Json, &json, NOW).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn prop_one_pass_matches_the_owned_path_on_arbitrary_packs(
        pack in pack(),
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        paths_agree(senml::Encoding::Cbor, &to_cbor(&pack).unwrap(), NOW).map_err(TestCaseError::fail)?;
        paths_agree(senml::Encoding::Json, &senml::to_json_vec(&pack).unwrap(), NOW)
            .map_err(TestCaseError::fail)?;
        paths_agree(senml::Encoding::Cbor, &bytes, NOW).map_err(TestCaseError::fail)?;
        paths_agree(senml::Encoding::Json, &bytes, NOW).map_err(TestCaseError::fail)?;
    }
}
