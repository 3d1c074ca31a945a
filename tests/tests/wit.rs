//! wit/ parses, and its worlds export the handler each execution mode expects.

use std::path::Path;

use wit_parser::{Resolve, WorldKey};

fn exports(resolve: &Resolve, world: wit_parser::WorldId) -> Vec<String> {
    resolve.worlds[world]
        .exports
        .keys()
        .map(|key| match key {
            WorldKey::Name(name) => name.clone(),
            WorldKey::Interface(id) => resolve.id_of(*id).unwrap_or_default(),
        })
        .collect()
}

#[test]
fn the_handler_worlds_parse_and_export_the_right_handler() {
    let mut resolve = Resolve::default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_dir(&dir).expect("wit/ parses");
    let sync = resolve
        .select_world(&[package], Some("sync-handler"))
        .unwrap();
    let async_ = resolve
        .select_world(&[package], Some("async-handler"))
        .unwrap();
    assert_eq!(
        exports(&resolve, sync),
        ["wasi:http/incoming-handler@0.2.12"]
    );
    assert_eq!(exports(&resolve, async_), ["wasi:http/handler@0.3.0"]);
}
