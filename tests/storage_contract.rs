//! One storage contract ([`ferry_storage::contract`]) for every store: the in-memory store
//! the coordinator's and worker's unit tests use, and the S3 path against moto, Garage and
//! Ceph RGW, each held to what its own probe found.

mod harness;

use ferry_storage::contract::storage_contract;
use ferry_storage::memstore::MemStore;
use harness::{S3Server, unique};

async fn on_server(server: S3Server) {
    let store = harness::s3_path(&server).await;
    let bucket = unique("contract");
    server.create_bucket(&bucket).await;
    storage_contract(store.as_ref(), &bucket).await;
}

#[tokio::test]
async fn the_memory_store_keeps_the_storage_contract() {
    let store = MemStore::with_buckets("memory", &["contract"]);
    storage_contract(&store, "contract").await;
}

#[tokio::test]
async fn the_s3_path_keeps_the_storage_contract_on_moto() {
    on_server(S3Server::moto()).await;
}

#[tokio::test]
async fn the_s3_path_keeps_the_storage_contract_on_garage() {
    on_server(S3Server::garage()).await;
}

#[tokio::test]
async fn the_s3_path_keeps_the_storage_contract_on_rgw() {
    on_server(S3Server::rgw()).await;
}
