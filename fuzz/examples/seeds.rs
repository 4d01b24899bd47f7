//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`, from
//! real data: envelopes and manifests made by `braid_core::codec`, pathspecs and names
//! as users type them, the example plan file and the plans it stores, and edits that
//! damage a store. The `flow_spec` seeds are the specs of the examples in
//! `cli/examples/`, written by their own binaries:
//! `cargo run -p braidflow-cli --example X -- show --json > fuzz/corpus/flow_spec/seed-X.json`.
//!
//! Run it in `fuzz/` with `cargo run --example seeds` (add `--target-dir ../target` to
//! reuse the workspace's compiled dependencies), then fuzz, then minimise with
//! `cargo fuzz cmin TARGET` before committing the corpus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use braid_core::codec;
use braid_runtime::plan::parse_plans;
use braidflow_fuzz::{Kind, Record};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn envelope<T: serde::Serialize + ?Sized>(name: &str, value: &T) {
    write("envelope_decode", name, &codec::encode(value).expect("encode a seed value").bytes);
}

fn envelopes() {
    envelope("u64-0", &0u64);
    envelope("u64-300", &300u64);
    envelope("u64-max", &u64::MAX);
    envelope("string-empty", "");
    envelope("string-hello", "hello");
    envelope("string-utf8", "grüße, 世界");
    envelope("vec-u64", &vec![1u64, 2, 3, 1 << 40]);
    // Over the 64 KiB threshold: a zstd-compressed payload.
    envelope("vec-u64-compressed", &vec![7u64; 100_000]);
    envelope("option-tuple", &Some((-3i8, "x".to_owned())));
    envelope("option-none", &None::<(i8, String)>);
    let leaf = Record {
        id: 1,
        name: "leaf".into(),
        scores: vec![-1, 0, 70_000],
        tags: BTreeMap::from([("a".to_owned(), 1u16), ("b".to_owned(), 65_535)]),
        kind: Kind::Named { label: "n".into(), at: Some(9) },
        raw: vec![0, 255, 128],
        pair: (true, 'é'),
        next: None,
    };
    envelope("record-leaf", &leaf);
    let root = Record { id: 2, kind: Kind::Weighted(-5), next: Some(Box::new(leaf.clone())), ..leaf.clone() };
    envelope("record-nested", &root);
    envelope("record-plain", &Record { kind: Kind::Plain, ..leaf });
    envelope("json-value", &serde_json::json!({"a": [1, 2.5, "x", null, true]}));
    let elements = codec::encode_elements(&vec![3u64, 5, 7]).expect("split a sequence");
    write("envelope_decode", "manifest-u64", &codec::encode_manifest(&elements).expect("a manifest"));
    let elements = codec::encode_elements(&("a", "bc")).expect("split a tuple");
    write("envelope_decode", "manifest-strings", &codec::encode_manifest(&elements).expect("a manifest"));
    write("envelope_decode", "manifest-empty", &codec::encode_manifest(&[]).expect("a manifest"));
}

fn pathspecs() {
    let id = "01JDA3VQ4K3W8X5T2N0R6YB7CM";
    let specs = [
        "fanout".to_owned(),
        "fanout/latest".to_owned(),
        format!("fanout/{id}"),
        format!("fanout/{id}/work"),
        format!("fanout/{id}/work/12"),
        "data_sync/latest/start/1/".to_owned(),
        id.to_owned(),
        "latest".to_owned(),
        "12".to_owned(),
        "v1.2".to_owned(),
        "nightly-eu".to_owned(),
        "team=sync".to_owned(),
        "_private_step".to_owned(),
    ];
    for (i, s) in specs.iter().enumerate() {
        write("pathspec_parse", &format!("{i:02}"), s.as_bytes());
    }
}

fn plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sites = std::fs::read_to_string(root.join("cli/examples/sites.toml")).expect("read cli/examples/sites.toml");
    write("plan_file", "sites.toml", sites.as_bytes());
    let more = [
        (
            "every",
            "[[plan]]\nname = \"sync_15m\"\nflow = \"data_sync\"\nevery = \"15m\"\ncatch_up = \"all\"\ncatch_up_limit = 4\n[plan.fixed]\nsite_id = \"site9\"\n",
        ),
        (
            "sets",
            "[[plan]]\nname = \"nightly\"\nflow = \"data_sync\"\ncron = \"0 30 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatch_up = \"none\"\ngrace = \"5m\"\nconcurrency = \"queue\"\nactive = false\nparameter_sets = [{ site_id = \"a\", full = true }, { site_id = \"b\" }]\n",
        ),
        (
            "two",
            "[[plan]]\nname = \"manual\"\nflow = \"data_sync\"\ndescription = \"no schedule\"\nlabels = { team = \"sync\", tier = \"gold\" }\n[[plan]]\nname = \"weekly\"\nflow = \"data_sync\"\ncron = \"@weekly\"\nmatrix = { site_id = [\"x\", \"y\"], full = [true, false] }\n",
        ),
    ];
    for (name, text) in more {
        write("plan_file", &format!("{name}.toml"), text.as_bytes());
    }
    for (name, text) in std::iter::once(("sites", sites.as_str())).chain(more) {
        for (i, plan) in parse_plans(text, name).expect("the seed plans are valid").iter().enumerate() {
            write("plan_file", &format!("{name}-{i}.json"), plan.to_json().to_string().as_bytes());
        }
    }
}

/// Edits for `damaged_store`: op, file (0 FORMAT, 1 the blob file, 2 records.sqlite),
/// offset (3 bytes LE), operands.
fn damage() {
    let seeds: &[(&str, &[u8])] = &[
        ("none", b""),
        ("db-truncated", &[1, 2, 0, 0, 0]),
        ("db-header-cut", &[1, 2, 100, 0, 0]),
        ("db-bit-flip-header", &[0, 2, 18, 0, 0, 0x40]),
        ("db-page2-zeroed", &[5, 2, 1, 0, 0]),
        ("db-overwrite", &[2, 2, 0, 0x20, 0, 4, b'j', b'u', b'n', b'k']),
        ("format-deleted", &[4, 0, 0, 0, 0]),
        (
            "format-newer",
            &[
                1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 13, b'b', b'r', b'a', b'i', b'd', b'-', b's', b't', b'o', b'r', b'e',
                b' ', b'9',
            ],
        ),
        ("blob-bit-flip", &[0, 1, 0, 1, 0, 1]),
        ("blob-truncated", &[1, 1, 0, 2, 0]),
        ("blob-deleted", &[4, 1, 0, 0, 0]),
        ("stray-wal", &[6, 0, 0, 0, 0, 8, 0x37, 0x7f, 0x06, 0x82, 0, 0x2d, 0xe2, 0x18]),
        ("stray-tmp", &[6, 2, 0, 0, 0, 3, b'a', b'b', b'c']),
        ("stray-bad-shard", &[6, 3, 0, 0, 0, 1, b'x']),
    ];
    for (name, bytes) in seeds {
        write("damaged_store", name, bytes);
    }
}

fn main() {
    envelopes();
    pathspecs();
    plans();
    damage();
    println!("seeds written under {}", corpus().display());
}
