//! Bounded property tests ("fuzzing in the normal suite") over everything that parses
//! untrusted input: container/exec ids, stdio URIs, the command line and the runc options `Any`.
//! A seeded xorshift generator keeps every run reproducible; each property runs a fixed number
//! of cases so the suite stays fast. The properties: never panic, and whatever is accepted is
//! safe to use (an accepted id can never name another path).

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use tether::{parse_target, validate_id, Target, MAX_ID_LEN};

const CASES: usize = 50_000;

/// xorshift64*: tiny, seeded, good enough to spray bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A string biased towards the characters that matter to the parsers.
    fn string(&mut self, max: usize) -> String {
        const ALPHABET: &[&str] = &[
            "a", "Z", "0", "9", ".", "..", "-", "_", "/", "\\", "\0", " ", ":", "%", "%2F", "?",
            "&", "=", "://", "é", "\u{202e}", "\n", "fifo", "file", "binary",
        ];
        let len = self.below(max + 1);
        let mut s = String::new();
        for _ in 0..len {
            if self.below(4) == 0 {
                s.push(char::from_u32(self.below(0x3000) as u32).unwrap_or('x'));
            } else {
                s.push_str(ALPHABET[self.below(ALPHABET.len())]);
            }
        }
        s
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn accepted_ids_are_safe_path_components() {
    let mut rng = Rng(0x5eed_0001);
    let mut accepted = 0;
    for _ in 0..CASES {
        let id = rng.string(90);
        if validate_id("container", &id).is_ok() {
            accepted += 1;
            assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "{id:?}");
            assert!(
                !id.contains('/') && !id.contains('\0') && !id.contains(".."),
                "{id:?}"
            );
            assert!(
                id != "." && !id.starts_with('.') && !id.starts_with('-'),
                "{id:?}"
            );
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "{id:?}"
            );
        }
    }
    assert!(
        accepted > 100,
        "the generator must also produce valid ids ({accepted} accepted)"
    );
}

#[test]
fn stdio_uris_never_panic_and_paths_are_absolute() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..CASES {
        let prefix = [
            "",
            "/",
            "fifo://",
            "file://",
            "binary://",
            "file:///",
            "binary:///x?",
        ][rng.below(7)];
        let s = format!("{prefix}{}", rng.string(40));
        match parse_target(&s) {
            Ok(Target::None) => assert!(s.is_empty()),
            Ok(
                Target::Fifo(p) | Target::File(p) | Target::Binary(p, _) | Target::BinaryV2(p, _),
            ) => {
                assert!(p.is_absolute(), "{s:?} -> {p:?}")
            }
            Err(e) => assert!(
                matches!(e, tether::error::Error::InvalidArgument(_)),
                "{s:?}: {e:?}"
            ),
        }
    }
}

#[test]
fn command_lines_never_panic() {
    let mut rng = Rng(0x5eed_0003);
    let words = [
        "-namespace",
        "-id",
        "-address",
        "-publish-binary",
        "-bundle",
        "-socket",
        "-debug",
        "-v",
        "--id=x",
        "-x=1",
        "-unknown",
        "start",
        "delete",
        "ns",
        "",
        "-",
        "--",
        "-debug=false",
    ];
    for _ in 0..CASES {
        let n = rng.below(8);
        let argv: Vec<String> = (0..n)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.string(6)
                } else {
                    words[rng.below(words.len())].to_string()
                }
            })
            .collect();
        let _ = tether::cli::parse(argv);
    }
}

#[test]
fn runc_options_decoding_never_panics() {
    let mut rng = Rng(0x5eed_0004);
    let good = containerd_shim_protos::shim::oci::Options {
        binary_name: "runc".into(),
        root: "/r".into(),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    for _ in 0..CASES {
        let mut value = if rng.below(2) == 0 {
            good.clone()
        } else {
            rng.bytes(64)
        };
        // Flip a few bytes of a valid message too.
        for _ in 0..rng.below(4) {
            if !value.is_empty() {
                let i = rng.below(value.len());
                value[i] = rng.next() as u8;
            }
        }
        let type_url = [
            "containerd.runc.v1.Options",
            "type.googleapis.com/containerd.runc.v1.Options",
            "runtimeoptions.v1.Options",
            "",
        ][rng.below(4)];
        let any = Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        };
        match tether::service::decode_options(&MessageField::some(any)) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(e, tether::error::Error::InvalidArgument(_)),
                "{e:?}"
            ),
        }
    }
}
