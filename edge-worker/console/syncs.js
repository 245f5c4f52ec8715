// Syncs (reverse ETL, DESIGN §11) do not exist in the worker yet. This page
// is the place for them: runs with planned/successful/failed rows, trigger,
// full resync and failed rows, once the syncs admin API lands.

import { el } from './ui.js';

export function render(main) {
  main.append(
    el('h1', {}, 'Syncs'),
    el('p', { class: 'empty', id: 'syncs-placeholder' },
      'Syncs are not part of this worker yet. When they are, this page lists each sync\u2019s runs (planned, successful and failed rows), starts a run or a full resync, and shows the failed rows.'));
}
