//! A run's final status from its settled counts (issue 18 §3).

use crate::storage::syncs::RunStatus;

/// The status a run ends with once its planned rows have settled (or the
/// wait for them timed out): `success` when every planned row was
/// delivered, `warning` when some failed or never settled, `failed` when
/// rows were planned and none was delivered.
pub fn final_status(planned: u64, succeeded: u64, failed: u64) -> RunStatus {
    if succeeded >= planned {
        RunStatus::Success
    } else if succeeded == 0 && failed > 0 && failed >= planned {
        RunStatus::Failed
    } else {
        RunStatus::Warning
    }
}
