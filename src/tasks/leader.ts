// Leader leases (issue 18): periodic work that must run in one control-plane process at a time (the health
// monitor) is done by whichever process holds the named lease, a row in `leases` with owner and expiry.
// Taking and renewing it is one compare-and-set in the store (StateStore.acquireLease); when its holder dies
// or hangs, another process takes it once it expires. On SQLite there is only one process: it always wins.
import type { StateStore } from '../state/index.js';

export class LeaderLease {
  #held = false;

  constructor(
    private readonly store: StateStore,
    readonly name: string,
    readonly owner: string,
    private readonly ttlMs: number,
  ) {}

  /** Whether this process held the lease at the last hold(). */
  get held(): boolean {
    return this.#held;
  }

  /** Takes or renews the lease; true when this process holds it for the next ttlMs. Call more often than ttlMs. */
  async hold(): Promise<boolean> {
    const at = Date.now();
    try {
      this.#held = await this.store.acquireLease(this.name, this.owner, new Date(at).toISOString(), new Date(at + this.ttlMs).toISOString());
    } catch {
      // A store that does not answer: nobody can be sure to hold it, so do not act as leader.
      this.#held = false;
    }
    return this.#held;
  }

  /** Lets another process take the lease at once (at a clean stop). */
  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    await this.store.update('leases', this.name, { expires: new Date(0).toISOString() }, { owner: this.owner }).catch(() => undefined);
  }
}
