//! # The Wing-Gong / Lowe search for one partition
//!
//! Wing and Gong's algorithm ("Testing and verifying concurrent objects",
//! 1993) with Lowe's memoization ("Testing for linearizability", 2017,
//! section 4: a configuration is the set of linearized operations plus the
//! model state; a configuration seen before is never explored twice), in the
//! iterative form Porcupine uses.
//!
//! The history becomes a doubly linked list of call and return entries in
//! time order (a call before a return at the same instant: equal times are
//! concurrent). The search walks the list: at a call entry it tries to
//! linearize that operation now (model step legal, configuration new); if so
//! it removes the operation's two entries ("lift"), pushes a frame and
//! restarts from the head. At a return entry it has met an operation that
//! must already have been linearized: it backtracks (pops a frame, restores
//! the entries, "unlift") and tries the next candidate. An empty list is a
//! linearization; backtracking with no frame left proves there is none.
//!
//! Invariants:
//! 1. `linearized` has bit `i` set iff operation `i` is in `frames`, and
//!    `linearized_hash` is the XOR of `zobrist[i]` over those bits, so the
//!    memo key's hash is maintained in O(1) per step.
//! 2. `state` is the model state after applying `frames`' operations in
//!    order; each frame stores the state before its operation.
//! 3. The list holds exactly the entries of operations not in `frames`, in
//!    time order; lifts and unlifts nest (dancing links), so an unlift
//!    restores the list exactly.
//! 4. Every configuration (linearized set, state) in the memo has been, or
//!    is being, explored; when the search backtracks past it, it is known to
//!    lead nowhere.
//! 5. Memory is reserved from the shared [`MemoryBudget`] before the memo or
//!    the state table grows, and all of it is given back when the search
//!    ends or is dropped; running out is [`UnknownReason::MemoryLimit`],
//!    never an abort.
//!
//! The search is resumable: [`Search::run`] stops after a number of steps
//! and can be called again, which is how the scheduler time-slices hard
//! partitions without letting one of them starve the others.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::checker::UnknownReason;
use std::hash::Hasher;

use crate::hash::{mix64, FxHasher, PassThroughBuild};
use crate::model::{Model, Step};

/// One operation as the search sees it.
#[derive(Debug)]
pub(crate) struct PreparedOp<'h, I, O> {
    /// The model input.
    pub(crate) input: &'h I,
    /// The observed output; `None` if unknown.
    pub(crate) output: Option<&'h O>,
    /// Invocation time.
    pub(crate) call: u64,
    /// Completion time; `None` is +infinity (an `Info` or pending op).
    pub(crate) ret: Option<u64>,
}

/// How the search ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    /// Found; `order` lists operation indices in linearization order.
    Linearizable {
        /// Operation indices (into the prepared ops), first to last.
        order: Vec<usize>,
    },
    /// Exhausted every configuration.
    NotLinearizable,
    /// Gave up.
    Unknown(UnknownReason),
}

/// The result of one [`Search::run`] slice.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Decided (or gave up for good).
    Done(SearchOutcome),
    /// Used up its steps; call `run` again.
    Suspended,
}

/// Reading the clock costs tens of nanoseconds, a step a few dozen: look at
/// it once per this many steps, which bounds the overshoot past a deadline
/// to well under a millisecond.
const CLOCK_CHECK_INTERVAL_STEPS: u64 = 1024;

/// Memory is reserved from the shared budget in chunks of this size, so the
/// atomic counter is touched once per thousands of memo entries, not once
/// per entry.
const RESERVE_CHUNK_BYTES: usize = 1 << 20;

/// Vectors and hash tables double when they grow, so the memory behind an
/// entry can be up to twice its payload; the estimate charges the worst
/// case so the budget is an upper bound.
const GROWTH_SLACK_FACTOR: usize = 2;

/// Bytes of hash-table slot per memo entry: an 8-byte hash key and a
/// 4-byte index (16 with padding), one control byte, at a 7/8 load factor.
const MEMO_SLOT_BYTES: usize = 20;

// The slot estimate must cover the slot it describes (key, value and the
// control byte), or the memory budget would under-count.
const _: () = assert!(MEMO_SLOT_BYTES > size_of::<(u64, u32)>());

/// Salt for the Zobrist keys, so operation 0 does not hash like state 0.
const ZOBRIST_SALT: u64 = 0x2545_f491_4f6c_dd1d;

/// Salt for mixing a state id into a memo hash.
const STATE_SALT: u64 = 0x9e6c_63d0_676a_9a99;

/// "No entry" in the linked list and the memo chains.
const NIL: u32 = u32::MAX;

/// The list's sentinel sits at index 0; entries follow.
const HEAD: u32 = 0;

/// A byte budget shared by every search of one check (invariant 5).
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    used_bytes: AtomicUsize,
    max_bytes: usize,
}

impl MemoryBudget {
    /// A budget of `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            used_bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.max_bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        let before = self.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
        assert!(before >= bytes, "released more memory than was reserved");
    }

    /// Bytes currently reserved (for tests).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used_bytes.load(Ordering::Acquire)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The operation (index into `ops`).
    op: u32,
    /// Call entry (true) or return entry.
    is_call: bool,
    /// For a call entry, its return entry.
    matching: u32,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    /// The call entry lifted.
    entry: u32,
    /// The state id before the operation.
    state_before: u32,
}

/// Configurations seen: (linearized bitset, state id), stored flat.
///
/// `heads` maps a configuration's hash to the newest entry with that hash;
/// `chain` links older entries with the same hash. Entry `k` occupies
/// `keys[k * stride .. (k + 1) * stride]`: the bitset words, then the state
/// id. Flat storage means no allocation per entry.
#[derive(Debug)]
struct Memo {
    words: usize,
    heads: HashMap<u64, u32, PassThroughBuild>,
    keys: Vec<u64>,
    chain: Vec<u32>,
}

impl Memo {
    fn new(words: usize) -> Self {
        Self {
            words,
            heads: HashMap::default(),
            keys: Vec::new(),
            chain: Vec::new(),
        }
    }

    fn entry_bytes(words: usize) -> usize {
        GROWTH_SLACK_FACTOR * ((words + 1) * size_of::<u64>() + size_of::<u32>() + MEMO_SLOT_BYTES)
    }

    /// Inserts the configuration; `false` if it was already there.
    fn insert(&mut self, hash: u64, bits: &[u64], state: u32) -> bool {
        debug_assert_eq!(bits.len(), self.words);
        let stride = self.words + 1;
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut cursor = head;
        while cursor != NIL {
            let at = cursor as usize * stride;
            let key = &self.keys[at..at + stride];
            if key[self.words] == u64::from(state) && &key[..self.words] == bits {
                return false;
            }
            cursor = self.chain[cursor as usize];
        }
        let index = u32::try_from(self.chain.len())
            .ok()
            .filter(|&i| i != NIL)
            .unwrap_or_else(|| unreachable!("memo entries are bounded by the memory budget"));
        self.keys.extend_from_slice(bits);
        self.keys.push(u64::from(state));
        self.chain.push(head);
        self.heads.insert(hash, index);
        true
    }
}

/// Distinct model states, numbered, so the memo stores a `u32` per state.
///
/// Each state is stored once, in `states`; `heads` maps a state's hash to
/// the newest id with that hash and `chain` links older ones (as in
/// [`Memo`]). Storing states once matters: with long strings, states are
/// most of the search's memory, and freeing them most of its teardown.
#[derive(Debug)]
struct Interner<S> {
    heads: HashMap<u64, u32, PassThroughBuild>,
    chain: Vec<u32>,
    states: Vec<S>,
}

impl<S: Eq + std::hash::Hash> Interner<S> {
    fn new() -> Self {
        Self {
            heads: HashMap::default(),
            chain: Vec::new(),
            states: Vec::new(),
        }
    }

    fn hash(state: &S) -> u64 {
        let mut hasher = FxHasher::default();
        state.hash(&mut hasher);
        mix64(hasher.finish())
    }

    /// Bytes charged per distinct state, besides the heap it owns: the
    /// inline value, its chain link and its table slot.
    fn state_bytes() -> usize {
        GROWTH_SLACK_FACTOR * (size_of::<S>() + size_of::<u32>() + MEMO_SLOT_BYTES)
    }

    fn find(&self, state: &S, hash: u64) -> Option<u32> {
        let mut cursor = self.heads.get(&hash).copied().unwrap_or(NIL);
        while cursor != NIL {
            if self.states[cursor as usize] == *state {
                return Some(cursor);
            }
            cursor = self.chain[cursor as usize];
        }
        None
    }

    /// Adds a state that [`Interner::find`] did not find.
    fn insert(&mut self, state: S, hash: u64) -> u32 {
        let id = u32::try_from(self.states.len())
            .ok()
            .filter(|&i| i != NIL)
            .unwrap_or_else(|| unreachable!("states are bounded by the memory budget"));
        let head = self.heads.insert(hash, id).unwrap_or(NIL);
        self.chain.push(head);
        self.states.push(state);
        id
    }

    fn get(&self, id: u32) -> &S {
        &self.states[id as usize]
    }
}

/// The search over one partition. See the module docs.
pub(crate) struct Search<'a, M: Model> {
    model: &'a M,
    ops: Vec<PreparedOp<'a, M::Input, M::Output>>,
    entries: Vec<Entry>,
    cursor: u32,
    linearized: Vec<u64>,
    linearized_hash: u64,
    zobrist: Vec<u64>,
    states: Interner<M::State>,
    state: u32,
    frames: Vec<Frame>,
    memo: Memo,
    budget: &'a MemoryBudget,
    reserved_bytes: usize,
    used_bytes: usize,
    deepest: usize,
    steps: u64,
}

impl<'a, M: Model> Search<'a, M> {
    /// Prepares the search; `ops[i].ret >= ops[i].call` must hold.
    pub(crate) fn new(
        model: &'a M,
        ops: Vec<PreparedOp<'a, M::Input, M::Output>>,
        budget: &'a MemoryBudget,
    ) -> Self {
        let n = ops.len();
        assert!(
            n < (NIL as usize) / 2,
            "a partition of {n} operations does not fit u32 entry indices"
        );
        // (time, kind, op): calls (0) before returns (1) at equal times.
        let mut order: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            let ret = op.ret.unwrap_or(u64::MAX);
            assert!(ret >= op.call, "operation {i} returns before it is called");
            order.push((op.call, 0, i as u32));
            order.push((ret, 1, i as u32));
        }
        order.sort_unstable();

        let mut return_entry = vec![NIL; n];
        for (k, &(_, kind, op)) in order.iter().enumerate() {
            if kind == 1 {
                return_entry[op as usize] = k as u32 + 1;
            }
        }
        let last = order.len() as u32;
        let mut entries = Vec::with_capacity(order.len() + 1);
        entries.push(Entry {
            op: NIL,
            is_call: false,
            matching: NIL,
            prev: NIL,
            next: if order.is_empty() { NIL } else { 1 },
        });
        for (k, &(_, kind, op)) in order.iter().enumerate() {
            let index = k as u32 + 1;
            entries.push(Entry {
                op,
                is_call: kind == 0,
                matching: if kind == 0 {
                    return_entry[op as usize]
                } else {
                    NIL
                },
                prev: index - 1,
                next: if index == last { NIL } else { index + 1 },
            });
        }

        let words = n.div_ceil(64);
        let zobrist = (0..n as u64).map(|i| mix64(i ^ ZOBRIST_SALT)).collect();
        let mut states = Interner::new();
        let init = model.init();
        let init_hash = Interner::hash(&init);
        let state = states.insert(init, init_hash);
        Self {
            model,
            ops,
            cursor: entries[HEAD as usize].next,
            entries,
            linearized: vec![0; words],
            linearized_hash: 0,
            zobrist,
            states,
            state,
            frames: Vec::with_capacity(n),
            memo: Memo::new(words),
            budget,
            reserved_bytes: 0,
            used_bytes: 0,
            deepest: 0,
            steps: 0,
        }
    }

    /// The most operations linearized at once so far.
    pub(crate) fn deepest(&self) -> usize {
        self.deepest
    }

    /// Runs at most `steps_max` steps, or until `deadline` or `cancel`.
    pub(crate) fn run(
        &mut self,
        steps_max: u64,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Progress {
        let mut taken = 0u64;
        loop {
            if self.entries[HEAD as usize].next == NIL {
                let order = self
                    .frames
                    .iter()
                    .map(|f| self.entries[f.entry as usize].op as usize)
                    .collect();
                return self.finish(SearchOutcome::Linearizable { order });
            }
            if taken == steps_max {
                return Progress::Suspended;
            }
            if self.steps.is_multiple_of(CLOCK_CHECK_INTERVAL_STEPS) {
                if cancel.load(Ordering::Relaxed) {
                    return self.finish(SearchOutcome::Unknown(UnknownReason::Cancelled));
                }
                if Instant::now() >= deadline {
                    return self.finish(SearchOutcome::Unknown(UnknownReason::Timeout));
                }
            }
            taken += 1;
            self.steps += 1;

            let entry = self.entries[self.cursor as usize];
            if entry.is_call {
                match self.try_linearize(self.cursor) {
                    Ok(true) => {
                        self.cursor = self.entries[HEAD as usize].next;
                        continue;
                    }
                    Ok(false) => self.cursor = entry.next,
                    Err(reason) => return self.finish(SearchOutcome::Unknown(reason)),
                }
            } else {
                // A return entry: its operation should have been linearized
                // by now. Backtrack.
                let Some(frame) = self.frames.pop() else {
                    return self.finish(SearchOutcome::NotLinearizable);
                };
                let op = self.entries[frame.entry as usize].op as usize;
                self.linearized[op / 64] &= !(1u64 << (op % 64));
                self.linearized_hash ^= self.zobrist[op];
                self.state = frame.state_before;
                self.unlift(frame.entry);
                self.cursor = self.entries[frame.entry as usize].next;
            }
        }
    }

    /// Tries to linearize the call entry's operation now. `Ok(true)` if it
    /// was (the search went one level deeper).
    fn try_linearize(&mut self, call_entry: u32) -> Result<bool, UnknownReason> {
        let op_index = self.entries[call_entry as usize].op as usize;
        let op = &self.ops[op_index];
        let next_state = match self
            .model
            .step(self.states.get(self.state), op.input, op.output)
        {
            Step::Illegal => return Ok(false),
            Step::Unchanged => self.state,
            Step::Changed(next) => {
                let hash = Interner::hash(&next);
                match self.states.find(&next, hash) {
                    Some(id) => id,
                    None => {
                        let bytes = Interner::<M::State>::state_bytes()
                            + GROWTH_SLACK_FACTOR * self.model.state_heap_bytes(&next);
                        self.charge(bytes)?;
                        self.states.insert(next, hash)
                    }
                }
            }
        };
        let word = op_index / 64;
        let bit = 1u64 << (op_index % 64);
        let hash = self.linearized_hash ^ self.zobrist[op_index];
        let memo_hash = hash ^ mix64(u64::from(next_state) ^ STATE_SALT);
        self.charge(Memo::entry_bytes(self.memo.words))?;
        self.linearized[word] |= bit;
        if !self.memo.insert(memo_hash, &self.linearized, next_state) {
            self.linearized[word] &= !bit;
            // Nothing was stored: give the charge back.
            self.used_bytes -= Memo::entry_bytes(self.memo.words);
            return Ok(false);
        }
        self.linearized_hash = hash;
        self.frames.push(Frame {
            entry: call_entry,
            state_before: self.state,
        });
        self.state = next_state;
        self.lift(call_entry);
        self.deepest = self.deepest.max(self.frames.len());
        Ok(true)
    }

    /// Accounts `bytes` of growth, reserving from the budget if needed.
    fn charge(&mut self, bytes: usize) -> Result<(), UnknownReason> {
        let needed = self.used_bytes + bytes;
        if needed > self.reserved_bytes {
            let chunk = (needed - self.reserved_bytes).max(RESERVE_CHUNK_BYTES);
            if !self.budget.try_reserve(chunk) {
                return Err(UnknownReason::MemoryLimit);
            }
            self.reserved_bytes += chunk;
        }
        self.used_bytes = needed;
        Ok(())
    }

    fn unlink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.entries[index as usize];
        self.entries[prev as usize].next = next;
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.entries[index as usize];
        self.entries[prev as usize].next = index;
        if next != NIL {
            self.entries[next as usize].prev = index;
        }
    }

    fn lift(&mut self, call_entry: u32) {
        let matching = self.entries[call_entry as usize].matching;
        self.unlink(call_entry);
        self.unlink(matching);
    }

    fn unlift(&mut self, call_entry: u32) {
        // Reverse order of `lift` (invariant 3).
        let matching = self.entries[call_entry as usize].matching;
        self.relink(matching);
        self.relink(call_entry);
    }

    /// Frees the tables and the reservation, then reports `outcome`.
    fn finish(&mut self, outcome: SearchOutcome) -> Progress {
        self.memo = Memo::new(self.memo.words);
        self.states = Interner::new();
        self.budget.release(self.reserved_bytes);
        self.reserved_bytes = 0;
        self.used_bytes = 0;
        Progress::Done(outcome)
    }
}

impl<M: Model> Drop for Search<'_, M> {
    fn drop(&mut self) {
        self.budget.release(self.reserved_bytes);
        self.reserved_bytes = 0;
    }
}

/// Runs a search to the end (or `deadline`) on the calling thread.
pub(crate) fn search_to_end<'a, M: Model>(
    model: &'a M,
    ops: Vec<PreparedOp<'a, M::Input, M::Output>>,
    deadline: Instant,
    budget: &'a MemoryBudget,
) -> SearchOutcome {
    let never = AtomicBool::new(false);
    let mut search = Search::new(model, ops, budget);
    loop {
        if let Progress::Done(outcome) = search.run(u64::MAX, deadline, &never) {
            return outcome;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RegisterInput, RegisterModel, RegisterOutput};
    use std::time::Duration;

    fn op<'h>(
        input: &'h RegisterInput,
        output: Option<&'h RegisterOutput>,
        call: u64,
        ret: Option<u64>,
    ) -> PreparedOp<'h, RegisterInput, RegisterOutput> {
        PreparedOp {
            input,
            output,
            call,
            ret,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn empty_history_is_linearizable() {
        let budget = MemoryBudget::new(1 << 20);
        let outcome = search_to_end(&RegisterModel, Vec::new(), far(), &budget);
        assert_eq!(outcome, SearchOutcome::Linearizable { order: vec![] });
    }

    #[test]
    fn concurrent_write_can_precede_read() {
        let w = RegisterInput::Write { value: 1 };
        let r = RegisterInput::Read;
        let ok = RegisterOutput::Write;
        let saw = RegisterOutput::Read { value: Some(1) };
        let budget = MemoryBudget::new(1 << 20);
        // The read is called first but overlaps the write.
        let ops = vec![
            op(&r, Some(&saw), 0, Some(10)),
            op(&w, Some(&ok), 5, Some(20)),
        ];
        let outcome = search_to_end(&RegisterModel, ops, far(), &budget);
        assert_eq!(outcome, SearchOutcome::Linearizable { order: vec![1, 0] });
        assert_eq!(budget.used(), 0, "a finished search gives its memory back");
    }

    #[test]
    fn read_before_write_started_is_not_linearizable() {
        let w = RegisterInput::Write { value: 1 };
        let r = RegisterInput::Read;
        let ok = RegisterOutput::Write;
        let saw = RegisterOutput::Read { value: Some(1) };
        let budget = MemoryBudget::new(1 << 20);
        let ops = vec![
            op(&r, Some(&saw), 0, Some(4)),
            op(&w, Some(&ok), 5, Some(20)),
        ];
        let outcome = search_to_end(&RegisterModel, ops, far(), &budget);
        assert_eq!(outcome, SearchOutcome::NotLinearizable);
    }

    #[test]
    fn equal_times_are_concurrent() {
        let w = RegisterInput::Write { value: 1 };
        let r = RegisterInput::Read;
        let ok = RegisterOutput::Write;
        let saw = RegisterOutput::Read { value: Some(1) };
        let budget = MemoryBudget::new(1 << 20);
        let ops = vec![
            op(&r, Some(&saw), 0, Some(5)),
            op(&w, Some(&ok), 5, Some(20)),
        ];
        let outcome = search_to_end(&RegisterModel, ops, far(), &budget);
        assert!(matches!(outcome, SearchOutcome::Linearizable { .. }));
    }

    #[test]
    fn tiny_budget_gives_unknown_not_abort() {
        let w = RegisterInput::Write { value: 1 };
        let ok = RegisterOutput::Write;
        let budget = MemoryBudget::new(16);
        let ops = vec![op(&w, Some(&ok), 0, Some(1))];
        let outcome = search_to_end(&RegisterModel, ops, far(), &budget);
        assert_eq!(outcome, SearchOutcome::Unknown(UnknownReason::MemoryLimit));
        assert_eq!(budget.used(), 0);
    }
}
