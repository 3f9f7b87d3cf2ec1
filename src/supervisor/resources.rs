//! Checks an `Update` payload (runtime-spec `LinuxResources` JSON) before runc sees it.
//!
//! runc applies a resources update controller by controller, so a value the kernel refuses
//! halfway leaves the container half-updated, and runc's failure is only an Unknown error. So
//! here a payload is refused with InvalidArgument when runc or the kernel would certainly refuse
//! it:
//! - **types**, as runc's Go decoder reads them (`specs-go/config.go`): unsigned fields take
//!   non-negative integers, objects objects, arrays arrays, keys match case-insensitively,
//!   `null` means unset and unknown keys are ignored;
//! - **ranges** the kernel or runc enforce (`kernel/sched`, `mm/page_counter.c`, runc's
//!   `libcontainer/cgroups/fs*` and `update.go`) or the runtime-spec schema states; where the
//!   answer depends on the hierarchy (cpu shares, `unified`), only once the container's
//!   hierarchy is known ([`for_hierarchy`]).
//!
//! Anything runc may accept passes (e.g. negative pids limits: runc writes `max` for them).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A JSON type as runc's decoder needs it.
enum Ty {
    I64,
    U64,
    U32,
    U16,
    Bool,
    Str,
    Obj(&'static [(&'static str, Ty)]),
    Arr(&'static Ty),
    /// A map with string keys and values of this type.
    Map(&'static Ty),
}

use Ty::*;

const THROTTLE: Ty = Obj(&[("major", I64), ("minor", I64), ("rate", U64)]);

/// `specs.LinuxResources`.
const RESOURCES: Ty = Obj(&[
    (
        "devices",
        Arr(&Obj(&[
            ("allow", Bool),
            ("type", Str),
            ("major", I64),
            ("minor", I64),
            ("access", Str),
        ])),
    ),
    (
        "memory",
        Obj(&[
            ("limit", I64),
            ("reservation", I64),
            ("swap", I64),
            ("kernel", I64),
            ("kernelTCP", I64),
            ("swappiness", U64),
            ("disableOOMKiller", Bool),
            ("useHierarchy", Bool),
            ("checkBeforeUpdate", Bool),
        ]),
    ),
    (
        "cpu",
        Obj(&[
            ("shares", U64),
            ("quota", I64),
            ("burst", U64),
            ("period", U64),
            ("realtimeRuntime", I64),
            ("realtimePeriod", U64),
            ("cpus", Str),
            ("mems", Str),
            ("idle", I64),
        ]),
    ),
    ("pids", Obj(&[("limit", I64)])),
    (
        "blockIO",
        Obj(&[
            ("weight", U16),
            ("leafWeight", U16),
            (
                "weightDevice",
                Arr(&Obj(&[
                    ("major", I64),
                    ("minor", I64),
                    ("weight", U16),
                    ("leafWeight", U16),
                ])),
            ),
            ("throttleReadBpsDevice", Arr(&THROTTLE)),
            ("throttleWriteBpsDevice", Arr(&THROTTLE)),
            ("throttleReadIOPSDevice", Arr(&THROTTLE)),
            ("throttleWriteIOPSDevice", Arr(&THROTTLE)),
        ]),
    ),
    (
        "hugepageLimits",
        Arr(&Obj(&[("pageSize", Str), ("limit", U64)])),
    ),
    (
        "network",
        Obj(&[
            ("classID", U32),
            ("priorities", Arr(&Obj(&[("name", Str), ("priority", U32)]))),
        ]),
    ),
    (
        "rdma",
        Map(&Obj(&[("hcaHandles", U32), ("hcaObjects", U32)])),
    ),
    ("unified", Map(&Str)),
]);

/// The checks that hold on every hierarchy; returns the parsed payload for [`for_hierarchy`].
pub(super) fn validate(data: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(data).map_err(|e| invalid(format!("not JSON: {e}")))?;
    check_type(&v, &RESOURCES, "resources").map_err(invalid)?;
    check_ranges(&v).map_err(invalid)?;
    Ok(v)
}

/// The checks that depend on the container's hierarchy (`unified`: cgroup2 only).
pub(super) fn for_hierarchy(v: &Value, unified: bool) -> Result<()> {
    if unified {
        return Ok(());
    }
    // cgroup v1 clamps cpu.shares to [2, 262144] and runc fails on the clamp; runc on cgroup2
    // converts to cpu.weight, and newer versions clamp there, so only v1 is certain.
    if let Some(x) =
        uint(field(Some(v), "cpu"), "shares").filter(|x| *x != 0 && !(2..=262_144).contains(x))
    {
        return Err(invalid(format!(
            "cpu.shares {x} is outside 2..=262144 (0 leaves it unchanged)"
        )));
    }
    // runc's v1 managers refuse any `unified` map (ErrV1NoUnified).
    if field(Some(v), "unified").is_some() {
        return Err(invalid(
            "unified (cgroup2 settings) given for a container on cgroup v1".into(),
        ));
    }
    Ok(())
}

fn invalid(why: String) -> Error {
    Error::InvalidArgument(format!("invalid resources: {why}"))
}

fn check_type(v: &Value, ty: &Ty, at: &str) -> std::result::Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let fits = match ty {
        I64 => v.is_i64(),
        U64 => v.is_u64(),
        U32 => v.as_u64().is_some_and(|n| n <= u32::MAX.into()),
        U16 => v.as_u64().is_some_and(|n| n <= u16::MAX.into()),
        Bool => v.is_boolean(),
        Str => v.is_string(),
        Obj(fields) => {
            let Some(o) = v.as_object() else {
                return Err(format!("{at} must be an object, got {v}"));
            };
            for (key, x) in o {
                if let Some((name, t)) = fields
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(key))
                {
                    check_type(x, t, &format!("{at}.{name}"))?;
                }
            }
            true
        }
        Arr(t) => {
            let Some(a) = v.as_array() else {
                return Err(format!("{at} must be an array, got {v}"));
            };
            a.iter()
                .enumerate()
                .try_for_each(|(i, x)| check_type(x, t, &format!("{at}[{i}]")))?;
            true
        }
        Map(t) => {
            let Some(o) = v.as_object() else {
                return Err(format!("{at} must be an object, got {v}"));
            };
            o.iter()
                .try_for_each(|(k, x)| check_type(x, t, &format!("{at}[{k:?}]")))?;
            true
        }
    };
    if fits {
        return Ok(());
    }
    let want = match ty {
        I64 => "a 64-bit integer",
        U64 => "a non-negative integer",
        U32 => "a non-negative 32-bit integer",
        U16 => "a non-negative 16-bit integer",
        Bool => "a boolean",
        Str => "a string",
        _ => unreachable!("containers are checked above"),
    };
    Err(format!("{at} must be {want}, got {v}"))
}

/// The member of `o` runc's decoder would take for `name` (exact match preferred).
fn field<'a>(o: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    let o: &Map<String, Value> = o?.as_object()?;
    o.get(name)
        .or_else(|| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

/// Types are already checked, so numbers convert.
fn int(o: Option<&Value>, name: &str) -> Option<i64> {
    field(o, name)?.as_i64()
}

fn uint(o: Option<&Value>, name: &str) -> Option<u64> {
    field(o, name)?.as_u64()
}

fn check_ranges(v: &Value) -> std::result::Result<(), String> {
    let memory = field(Some(v), "memory");
    // The kernel takes "-1" as the only negative limit (page_counter_memparse); runc passes
    // other negatives through.
    for name in ["limit", "reservation", "swap"] {
        if let Some(x) = int(memory, name).filter(|x| *x < -1) {
            return Err(format!(
                "memory.{name} {x} must be -1 (unlimited), 0 (unchanged) or a byte count"
            ));
        }
    }
    // memory+swap can never be below memory (v1: EINVAL; v2: runc refuses).
    match (int(memory, "limit"), int(memory, "swap")) {
        (Some(limit), Some(swap)) if limit > 0 && swap > 0 && swap < limit => {
            return Err(format!(
                "memory.swap {swap} (memory+swap) is below memory.limit {limit}"
            ))
        }
        (Some(-1), Some(swap)) if swap > 0 => {
            return Err(format!(
                "memory.swap {swap} is limited while memory.limit is unlimited"
            ))
        }
        _ => {}
    }
    if let Some(x) = uint(memory, "swappiness").filter(|x| *x > 100) {
        return Err(format!("memory.swappiness {x} is outside 0..=100"));
    }

    let cpu = field(Some(v), "cpu");
    // The CFS bandwidth period is 1 ms..=1 s and a finite quota at least 1 ms (tg_set_cfs_bandwidth);
    // 0 leaves either unchanged, a negative quota means unlimited.
    if let Some(x) = uint(cpu, "period").filter(|x| *x != 0 && !(1000..=1_000_000).contains(x)) {
        return Err(format!("cpu.period {x} µs is outside 1000..=1000000"));
    }
    let quota = int(cpu, "quota");
    if let Some(x) = quota.filter(|x| (1..1000).contains(x)) {
        return Err(format!(
            "cpu.quota {x} µs is below the 1000 µs minimum (-1 is unlimited)"
        ));
    }
    if let (Some(q), Some(b)) = (quota.filter(|q| *q > 0), uint(cpu, "burst")) {
        if b > q as u64 {
            return Err(format!("cpu.burst {b} µs exceeds cpu.quota {q} µs"));
        }
    }
    if let Some(x) = int(cpu, "idle").filter(|x| !(0..=1).contains(x)) {
        return Err(format!("cpu.idle {x} must be 0 or 1"));
    }

    // runtime-spec `blkioWeight`: 10..=1000; runc treats 0 as unchanged.
    let blkio = field(Some(v), "blockIO");
    let weights = [(blkio, "weight"), (blkio, "leafWeight")]
        .into_iter()
        .map(|(o, n)| (o, n, "blockIO".to_string()));
    let devices = field(blkio, "weightDevice")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate();
    let devices = devices.flat_map(|(i, d)| {
        [
            (Some(d), "weight", format!("blockIO.weightDevice[{i}]")),
            (Some(d), "leafWeight", format!("blockIO.weightDevice[{i}]")),
        ]
    });
    for (o, name, at) in weights.chain(devices) {
        if let Some(x) = uint(o, name).filter(|x| *x != 0 && !(10..=1000).contains(x)) {
            return Err(format!("{at}.{name} {x} is outside 10..=1000"));
        }
    }

    // The kernel's cpu.weight range (on v1 runc refuses `unified` altogether).
    if let Some(u) = field(Some(v), "unified") {
        if let Some(w) = field(Some(u), "cpu.weight").and_then(Value::as_str) {
            if !w
                .trim()
                .parse::<u64>()
                .is_ok_and(|w| (1..=10_000).contains(&w))
            {
                return Err(format!("unified cpu.weight {w:?} is outside 1..=10000"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str, unified: Option<bool>) -> bool {
        let checked = validate(json.as_bytes())
            .and_then(|v| unified.map_or(Ok(()), |u| for_hierarchy(&v, u)));
        match checked {
            Ok(()) => true,
            Err(Error::InvalidArgument(_)) => false,
            Err(e) => panic!("{json}: not InvalidArgument: {e:?}"),
        }
    }

    #[test]
    fn well_typed_resources_pass() {
        let good = [
            "{}",
            r#"{"memory":{"limit":33554432},"pids":{"limit":20}}"#,
            r#"{"cpu":{"shares":512,"cpus":"0","quota":-1,"period":100000}}"#,
            r#"{"memory":{"limit":-1,"swap":-1,"reservation":0},"cpu":{"shares":0,"quota":0,"period":0}}"#,
            r#"{"memory":{"limit":67108864,"swap":134217728,"swappiness":60}}"#,
            r#"{"memory":{"limit":1024}}"#,
            r#"{"memory":null,"cpu":{"shares":null},"pids":{"limit":-1}}"#,
            // runc writes "max" for any negative pids limit and leaves 0 alone.
            r#"{"pids":{"limit":-5}}"#,
            r#"{"pids":{"limit":0}}"#,
            r#"{"cpu":{"quota":50000,"burst":20000,"idle":1,"realtimeRuntime":-1}}"#,
            r#"{"cpu":{"quota":-5}}"#,
            r#"{"blockIO":{"weight":500,"weightDevice":[{"major":8,"minor":0,"weight":10}],"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]}}"#,
            r#"{"devices":[{"allow":false,"access":"rwm"}],"hugepageLimits":[{"pageSize":"2MB","limit":0}],"network":{"classID":1}}"#,
            r#"{"rdma":{"mlx5_1":{"hcaHandles":3}},"unknownField":[1,"x"]}"#,
            // Go's decoder matches keys case-insensitively.
            r#"{"Memory":{"Limit":33554432}}"#,
        ];
        for json in good {
            assert!(ok(json, Some(false)), "refused on v1: {json}");
            assert!(ok(json, Some(true)), "refused on v2: {json}");
            assert!(ok(json, None), "refused on an unknown hierarchy: {json}");
        }
        assert!(ok(
            r#"{"unified":{"cpu.weight":"100","memory.high":"max"}}"#,
            Some(true)
        ));
        // Clamped by newer runc on cgroup2, so refused only on v1.
        assert!(ok(r#"{"cpu":{"shares":1}}"#, Some(true)) && ok(r#"{"cpu":{"shares":1}}"#, None));
    }

    #[test]
    fn malformed_or_out_of_range_resources_are_refused() {
        let bad = [
            "not json",
            "[1]",
            "5",
            // Types.
            r#"{"memory":5}"#,
            r#"{"memory":[]}"#,
            r#"{"memory":{"limit":"lots"}}"#,
            r#"{"memory":{"limit":1.5}}"#,
            r#"{"memory":{"limit":18446744073709551615}}"#,
            r#"{"memory":{"swappiness":-1}}"#,
            r#"{"memory":{"disableOOMKiller":1}}"#,
            r#"{"cpu":{"shares":-1}}"#,
            r#"{"cpu":{"period":-100000}}"#,
            r#"{"cpu":{"cpus":3}}"#,
            r#"{"cpu":"2"}"#,
            r#"{"pids":{"limit":"max"}}"#,
            r#"{"pids":7}"#,
            r#"{"blockIO":{"weight":70000}}"#,
            r#"{"blockIO":{"throttleReadBpsDevice":{"major":8}}}"#,
            r#"{"blockIO":{"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":-1}]}}"#,
            r#"{"devices":{"allow":true}}"#,
            r#"{"devices":[{"allow":"yes"}]}"#,
            r#"{"hugepageLimits":[{"pageSize":2097152}]}"#,
            r#"{"network":{"classID":4294967296}}"#,
            r#"{"rdma":{"mlx5_1":{"hcaHandles":-1}}}"#,
            r#"{"unified":{"memory.max":1}}"#,
            r#"{"unified":["cpu.weight"]}"#,
            r#"{"MEMORY":{"LIMIT":"x"}}"#,
            // Ranges.
            r#"{"memory":{"limit":-2}}"#,
            r#"{"memory":{"reservation":-5}}"#,
            r#"{"memory":{"swap":-2}}"#,
            r#"{"memory":{"limit":67108864,"swap":33554432}}"#,
            r#"{"memory":{"limit":-1,"swap":33554432}}"#,
            r#"{"memory":{"swappiness":101}}"#,
            r#"{"cpu":{"period":999}}"#,
            r#"{"cpu":{"period":1000001}}"#,
            r#"{"cpu":{"quota":500}}"#,
            r#"{"cpu":{"quota":1}}"#,
            r#"{"cpu":{"quota":10000,"burst":20000}}"#,
            r#"{"cpu":{"idle":2}}"#,
            r#"{"cpu":{"idle":-1}}"#,
            r#"{"blockIO":{"weight":5}}"#,
            r#"{"blockIO":{"leafWeight":1001}}"#,
            r#"{"blockIO":{"weightDevice":[{"major":8,"minor":0,"weight":2000}]}}"#,
            r#"{"Cpu":{"Period":5}}"#,
        ];
        for json in bad {
            assert!(!ok(json, Some(false)), "accepted on v1: {json}");
            assert!(!ok(json, Some(true)), "accepted on v2: {json}");
            assert!(!ok(json, None), "accepted on an unknown hierarchy: {json}");
        }
    }

    #[test]
    fn hierarchy_specific_ranges() {
        for shares in [1, 262_145, 1_000_000] {
            let json = format!(r#"{{"cpu":{{"shares":{shares}}}}}"#);
            assert!(!ok(&json, Some(false)), "{json} accepted on v1");
            assert!(ok(&json, Some(true)), "{json} refused on v2");
        }
        assert!(
            ok(r#"{"cpu":{"shares":2}}"#, Some(false))
                && ok(r#"{"cpu":{"shares":262144}}"#, Some(false))
        );
        assert!(
            !ok(r#"{"unified":{"pids.max":"10"}}"#, Some(false)),
            "runc's v1 managers refuse unified"
        );
        assert!(ok(r#"{"unified":{"pids.max":"10"}}"#, Some(true)));
        for w in ["0", "10001", "x"] {
            assert!(
                !ok(
                    &format!(r#"{{"unified":{{"cpu.weight":"{w}"}}}}"#),
                    Some(true)
                ),
                "cpu.weight {w}"
            );
        }
    }

    #[test]
    fn the_message_names_the_field() {
        let Err(Error::InvalidArgument(m)) = validate(br#"{"cpu":{"shares":-1}}"#) else {
            panic!()
        };
        assert!(
            m.contains("cpu.shares") && m.contains("non-negative"),
            "{m}"
        );
        let Err(Error::InvalidArgument(m)) = validate(br#"{"memory":5}"#) else {
            panic!()
        };
        assert!(m.contains("resources.memory must be an object"), "{m}");
    }
}
