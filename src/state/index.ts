// The control plane's state: tables (schema.ts), migrations and the store interface.
export { openState, now, MarkerNotFoundError, type StateStore, type Row, type Where, type Page, type OpenStateOptions } from './store.js';
export type * from './schema.js';
