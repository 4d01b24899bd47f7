//! What the fuzz targets and the seed generator (`examples/seeds.rs`) share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A struct shaped like what flows store: nested options, maps, enums, bytes, tuples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub scores: Vec<i32>,
    pub tags: BTreeMap<String, u16>,
    pub kind: Kind,
    pub raw: Vec<u8>,
    pub pair: (bool, char),
    pub next: Option<Box<Record>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    Plain,
    Weighted(i64),
    Named { label: String, at: Option<u32> },
}

/// The `sites` example's flow (cli/examples/sites.rs), which its plan file targets.
pub const DATA_SYNC_SPEC: &str = r#"{"format_version": 1, "name": "data_sync",
    "params": [{"name": "site_id", "type": "string", "help": "the site to sync"},
               {"name": "full", "type": "bool", "default": false}],
    "steps": [{"name": "start", "kind": "normal", "next": {"type": "next", "to": "end"}},
              {"name": "end", "kind": "normal", "next": {"type": "end"}}]}"#;
