//! The pickle stack machine, bounded by construction. Values live in an arena and are referred
//! to by index, so a memo get or `DUP` copies four bytes (never a subtree), cycles cost nothing,
//! and dropping the result is a flat loop whatever the nesting. Only the opcodes of
//! [`super::opcodes`] run; calls (`REDUCE`), globals and persistent ids go to
//! [`super::rebuild`], which accepts only tensor rebuilding. Every limit of [`super::limits`]
//! is checked where the quantity grows.

use std::collections::HashMap;
use std::ops::Range;

use super::limits::{MAX_CHILDREN, MAX_DEPTH, MAX_MARKS, MAX_MEMO, MAX_NODES, MAX_OPS, MAX_STACK};
use super::opcodes::*;
use super::rebuild::{self, Global, StorageType};
use super::PickleError;

/// Index of a value in the arena.
pub(crate) type Id = u32;

/// A value the machine built. Containers hold ids; strings are ranges of `data.pkl`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    None,
    Bool(bool),
    Int(i64),
    /// A float or bytes value: never needed for tensors, kept as a placeholder.
    Other,
    Str(Range<usize>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// Keys and values interleaved, in insertion order.
    Dict(Vec<Id>),
    Global(Global),
    Storage {
        ty: StorageType,
        key: Id,
        numel: u64,
    },
    Tensor {
        storage: Id,
        offset: u64,
        size: Id,
        stride: Id,
    },
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    depth: u32,
}

/// The values of one pickle and the one it returned.
#[derive(Debug)]
pub(crate) struct Graph<'a> {
    data: &'a [u8],
    nodes: Vec<Node>,
    pub root: Id,
}

impl<'a> Graph<'a> {
    pub(crate) fn kind(&self, id: Id) -> &Kind {
        &self.nodes[id as usize].kind
    }

    pub(crate) fn str(&self, id: Id) -> Option<&'a str> {
        match self.kind(id) {
            // Checked to be UTF-8 when the string was read.
            Kind::Str(r) => std::str::from_utf8(&self.data[r.clone()]).ok(),
            _ => None,
        }
    }

    pub(crate) fn int(&self, id: Id) -> Option<i64> {
        match self.kind(id) {
            Kind::Int(i) => Some(*i),
            Kind::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub(crate) fn tuple(&self, id: Id) -> Option<&[Id]> {
        match self.kind(id) {
            Kind::Tuple(items) => Some(items),
            _ => None,
        }
    }
}

struct Machine<'a> {
    cur: Cursor<'a>,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    children: usize,
}

fn limit(what: &'static str, limit: usize) -> PickleError {
    PickleError::Limit { what, limit }
}

/// Runs `data` (a whole `data.pkl`) and returns what `STOP` returned.
pub(crate) fn run(data: &[u8]) -> Result<Graph<'_>, PickleError> {
    let mut m = Machine {
        cur: Cursor::new(data),
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        children: 0,
    };
    for _ in 0..MAX_OPS {
        let at = m.cur.pos();
        let op = m.cur.u8().map_err(|_| m.cur.error("ends without STOP"))?;
        if op == STOP {
            let root = m.pop()?;
            return Ok(Graph {
                data,
                nodes: m.nodes,
                root,
            });
        }
        m.step(op).map_err(|e| e.at(at))?;
    }
    Err(limit("opcodes", MAX_OPS))
}

impl<'a> Machine<'a> {
    fn err(&self, reason: &'static str) -> PickleError {
        self.cur.error(reason)
    }

    fn push(&mut self, id: Id) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return Err(limit("values on the stack", MAX_STACK));
        }
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("pops from an empty stack"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err("pops from an empty stack"))
    }

    fn top(&self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&id) if self.stack.len() > floor => Ok(id),
            _ => Err(self.err("reads an empty stack")),
        }
    }

    /// The values pushed since the last `MARK`, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("closes a MARK that was never opened"))?;
        Ok(self.stack.split_off(mark))
    }

    fn depth(&self, id: Id) -> u32 {
        self.nodes[id as usize].depth
    }

    fn count_children(&mut self, n: usize) -> Result<(), PickleError> {
        self.children += n;
        if self.children > MAX_CHILDREN {
            return Err(limit("items in containers", MAX_CHILDREN));
        }
        Ok(())
    }

    /// Adds a value; containers are one deeper than their deepest item.
    fn add(&mut self, kind: Kind, items: &[Id]) -> Result<Id, PickleError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(limit("values", MAX_NODES));
        }
        let depth = 1 + items.iter().map(|&i| self.depth(i)).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(limit("levels of nesting", MAX_DEPTH as usize));
        }
        self.count_children(items.len())?;
        self.nodes.push(Node { kind, depth });
        Ok((self.nodes.len() - 1) as Id)
    }

    fn add_push(&mut self, kind: Kind) -> Result<(), PickleError> {
        let items = match &kind {
            Kind::Tuple(v) | Kind::List(v) | Kind::Dict(v) => v.clone(),
            _ => Vec::new(),
        };
        let id = self.add(kind, &items)?;
        self.push(id)
    }

    fn string(&mut self, range: Range<usize>) -> Result<(), PickleError> {
        if std::str::from_utf8(&self.cur.data()[range.clone()]).is_err() {
            return Err(self.err("string is not UTF-8"));
        }
        self.add_push(Kind::Str(range))
    }

    /// Appends `items` to the list or dict `target` (`APPEND(S)`, `SETITEM(S)`).
    fn extend(&mut self, target: Id, items: Vec<Id>, dict: bool) -> Result<(), PickleError> {
        if dict && items.len() % 2 != 0 {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        let deepest = items.iter().map(|&i| self.depth(i)).max().unwrap_or(0);
        if deepest + 1 > MAX_DEPTH {
            return Err(limit("levels of nesting", MAX_DEPTH as usize));
        }
        self.count_children(items.len())?;
        let node = &mut self.nodes[target as usize];
        match (&mut node.kind, dict) {
            (Kind::List(v), false) | (Kind::Dict(v), true) => v.extend(items),
            (_, false) => return Err(self.err("APPEND to something that is not a list")),
            (_, true) => return Err(self.err("SETITEM on something that is not a dict")),
        }
        node.depth = node.depth.max(deepest + 1);
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let id = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(limit("memo entries", MAX_MEMO));
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.err("memo get of a key never put"))?;
        self.push(id)
    }

    fn tuple_of(&mut self, n: usize) -> Result<(), PickleError> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.pop()?);
        }
        items.reverse();
        self.add_push(Kind::Tuple(items))
    }

    fn step(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            PROTO => {
                if self.cur.u8()? > 5 {
                    return Err(self.err("pickle protocol newer than 5"));
                }
            }
            FRAME => {
                self.cur.u64()?;
            }
            MARK => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(limit("open MARKs", MAX_MARKS));
                }
                self.marks.push(self.stack.len());
            }
            POP => {
                self.pop()?;
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let id = self.top()?;
                self.push(id)?;
            }
            NONE => self.add_push(Kind::None)?,
            NEWTRUE => self.add_push(Kind::Bool(true))?,
            NEWFALSE => self.add_push(Kind::Bool(false))?,
            BININT => {
                let v = self.cur.i32()?;
                self.add_push(Kind::Int(v.into()))?
            }
            BININT1 => {
                let v = self.cur.u8()?;
                self.add_push(Kind::Int(v.into()))?
            }
            BININT2 => {
                let v = self.cur.u16()?;
                self.add_push(Kind::Int(v.into()))?
            }
            LONG1 => {
                let n = self.cur.u8()?;
                let v = self.cur.long(n.into())?;
                self.add_push(Kind::Int(v))?
            }
            BINFLOAT => {
                self.cur.take(8)?;
                self.add_push(Kind::Other)?
            }
            SHORT_BINUNICODE => {
                let n = self.cur.u8()?;
                let r = self.cur.counted(n.into())?;
                self.string(r)?
            }
            BINUNICODE => {
                let n = self.cur.u32()?;
                let r = self.cur.counted(n.into())?;
                self.string(r)?
            }
            BINUNICODE8 => {
                let n = self.cur.u64()?;
                let r = self.cur.counted(n)?;
                self.string(r)?
            }
            SHORT_BINBYTES | BINBYTES | BINBYTES8 => {
                let n = match op {
                    SHORT_BINBYTES => self.cur.u8()?.into(),
                    BINBYTES => self.cur.u32()?.into(),
                    _ => self.cur.u64()?,
                };
                self.cur.counted(n)?;
                self.add_push(Kind::Other)?
            }
            EMPTY_TUPLE => self.add_push(Kind::Tuple(Vec::new()))?,
            TUPLE1 => self.tuple_of(1)?,
            TUPLE2 => self.tuple_of(2)?,
            TUPLE3 => self.tuple_of(3)?,
            TUPLE => {
                let items = self.pop_mark()?;
                self.add_push(Kind::Tuple(items))?
            }
            EMPTY_LIST => self.add_push(Kind::List(Vec::new()))?,
            LIST => {
                let items = self.pop_mark()?;
                self.add_push(Kind::List(items))?
            }
            EMPTY_DICT => self.add_push(Kind::Dict(Vec::new()))?,
            DICT => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(self.err("DICT with an odd number of values"));
                }
                self.add_push(Kind::Dict(items))?
            }
            APPEND => {
                let item = self.pop()?;
                let list = self.top()?;
                self.extend(list, vec![item], false)?
            }
            SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.extend(dict, vec![key, value], true)?
            }
            APPENDS | SETITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.extend(target, items, op == SETITEMS)?
            }
            BINPUT => {
                let k = self.cur.u8()?;
                self.memo_put(k.into())?
            }
            LONG_BINPUT => {
                let k = self.cur.u32()?;
                self.memo_put(k)?
            }
            MEMOIZE => {
                let k = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                self.memo_put(k)?
            }
            BINGET => {
                let k = self.cur.u8()?;
                self.memo_get(k.into())?
            }
            LONG_BINGET => {
                let k = self.cur.u32()?;
                self.memo_get(k)?
            }
            GLOBAL => {
                let module = self.cur.line()?;
                let name = self.cur.line()?;
                let data = self.cur.data();
                let global = rebuild::global(&data[module], &data[name])
                    .ok_or_else(|| self.err(rebuild::REFUSED_GLOBAL))?;
                self.add_push(Kind::Global(global))?
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let bytes = |id: Id| match &self.nodes[id as usize].kind {
                    Kind::Str(r) => Some(&self.cur.data()[r.clone()]),
                    _ => None,
                };
                let global = match (bytes(module), bytes(name)) {
                    (Some(m), Some(n)) => rebuild::global(m, n),
                    _ => return Err(self.err("STACK_GLOBAL of something that is not a string")),
                };
                let global = global.ok_or_else(|| self.err(rebuild::REFUSED_GLOBAL))?;
                self.add_push(Kind::Global(global))?
            }
            REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let id = rebuild::call(self, callable, args)?;
                self.push(id)?
            }
            BUILD => {
                // `Module.state_dict()` is an OrderedDict carrying a `_metadata` attribute,
                // pickled as BUILD with that state: kept as a dict, the state ignored.
                self.pop()?;
                let target = self.top()?;
                if !matches!(self.nodes[target as usize].kind, Kind::Dict(_)) {
                    return Err(self.err("BUILD on something that is not a dict"));
                }
            }
            BINPERSID => {
                let pid = self.pop()?;
                let id = rebuild::persistent_id(self, pid)?;
                self.push(id)?
            }
            _ => return Err(self.err("unknown or unsupported opcode")),
        }
        Ok(())
    }
}

/// What [`super::rebuild`] sees of the machine: read values, add new ones.
pub(crate) trait Builder {
    fn kind(&self, id: Id) -> &Kind;
    fn text(&self, id: Id) -> Option<&str>;
    fn build(&mut self, kind: Kind, items: &[Id]) -> Result<Id, PickleError>;
    fn error(&self, reason: &'static str) -> PickleError;
}

impl Builder for Machine<'_> {
    fn kind(&self, id: Id) -> &Kind {
        &self.nodes[id as usize].kind
    }

    fn text(&self, id: Id) -> Option<&str> {
        match self.kind(id) {
            Kind::Str(r) => std::str::from_utf8(&self.cur.data()[r.clone()]).ok(),
            _ => None,
        }
    }

    fn build(&mut self, kind: Kind, items: &[Id]) -> Result<Id, PickleError> {
        self.add(kind, items)
    }

    fn error(&self, reason: &'static str) -> PickleError {
        self.err(reason)
    }
}
