//! Prints the `SliceCache` CustomResourceDefinition as YAML.
//!
//! `cargo run -p slicecache-api --bin crdgen > crds/generated/slicecaches.slicecache.io.yaml`

fn main() {
    print!("{}", slicecache_api::crd::crd_yaml());
}
