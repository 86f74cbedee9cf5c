//! openraft's storage conformance suite against our write-ahead log and
//! sled state machine.

use std::path::PathBuf;
use std::sync::Arc;

use flagstaff::raft::log_store::LogStore;
use flagstaff::raft::persister::Persister;
use flagstaff::raft::state_machine::StateMachine;
use flagstaff::raft::types::AppliedMeta;
use flagstaff::raft::{FsyncPolicy, NodeId, TypeConfig};
use flagstaff::store::storage::SledStorage;
use flagstaff::store::{StateView, Store};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

/// Removes the store's directory when the suite is done with it.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flagstaff-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = LogStore::open(&dir, FsyncPolicy::Always, 1 << 20).unwrap();
        let storage = Arc::new(SledStorage::open(&dir.join("state")).unwrap());
        let store = Arc::new(Store::new());
        store.install(StateView::default());
        let persister = Arc::new(Persister::start(storage.clone(), 100, 0));
        let sm = StateMachine::new(
            store,
            storage,
            persister,
            AppliedMeta::default(),
            dir.join("snapshots"),
            1000,
        );
        Ok((TempDir(dir), log, sm))
    }
}

#[test]
fn our_log_and_state_machine_pass_openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}
