/**
 * A bounded FIFO with async consumers: `push` never blocks and refuses when full (the caller
 * counts the drop); `next` waits for an item or for `end`.
 */
export class BoundedQueue<T> {
  private items: T[] = [];
  private head = 0;
  private waiters: Array<(r: IteratorResult<T>) => void> = [];
  private ended = false;
  private failure: Error | null = null;
  private failWaiters: Array<(e: Error) => void> = [];

  constructor(private readonly limit: number) {}

  get length(): number {
    return this.items.length - this.head;
  }

  /** Enqueues or hands the item to a waiting consumer. False when full or ended. */
  push(item: T): boolean {
    if (this.ended) return false;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.failWaiters.shift();
      waiter({ value: item, done: false });
      return true;
    }
    if (this.length >= this.limit) return false;
    this.items.push(item);
    return true;
  }

  /** Removes and returns the next queued item without waiting, or undefined. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined as T;
    this.head++;
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /**
   * Removes `item` if it is queued (not yet handed to a consumer). True when it was. Costs a
   * scan of the queue: for rare removals from short queues (an accept backlog).
   */
  remove(item: T): boolean {
    const i = this.items.indexOf(item, this.head);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  /** Next item; `done` once ended and drained. Rejects with the end error if one was given. */
  next(): Promise<IteratorResult<T>> {
    if (this.length > 0) return Promise.resolve({ value: this.shift() as T, done: false });
    if (this.ended) {
      if (this.failure) return Promise.reject(this.failure);
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiters.push(resolve);
      this.failWaiters.push(reject);
    });
  }

  /** Ends the queue: queued items are still delivered, then `done` (or `error`). */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = error ?? null;
    const waiters = this.waiters;
    const failWaiters = this.failWaiters;
    this.waiters = [];
    this.failWaiters = [];
    for (let i = 0; i < waiters.length; i++) {
      if (error) failWaiters[i](error);
      else waiters[i]({ value: undefined, done: true });
    }
  }
}
