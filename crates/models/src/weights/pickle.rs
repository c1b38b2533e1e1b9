//! A small, safe pickle reader for the subset of the format that `torch.save` writes.
//!
//! PyTorch checkpoints are Python pickles. We never run Python: the reader interprets the opcodes
//! into plain values, recognises the handful of globals a state dict needs
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the typed-storage classes) and
//! keeps every other global as an inert [`Value::Object`], so a hostile file can at worst be
//! rejected, never execute anything. Tensors come out as [`TensorRef`]s (storage key, offset,
//! size, stride) that the container readers (zip or legacy) resolve against the raw storages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tch::Kind;

/// A reference to (part of) a serialized storage, as its persistent id describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// The storage key (file name in the zip format, id in the legacy format).
    pub key: String,
    /// Element type of the storage.
    pub kind: Kind,
    /// Elements of the root storage.
    pub numel: i64,
    /// Element offset of a legacy storage view into its root storage (0 otherwise).
    pub view_offset: i64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage holding the data.
    pub storage: StorageRef,
    /// Element offset of the first element.
    pub offset: i64,
    /// Size of each dimension.
    pub size: Vec<i64>,
    /// Stride of each dimension, in elements.
    pub stride: Vec<i64>,
}

/// An object the reader cannot interpret: a call of `callable` with `args`, plus BUILD state.
#[derive(Debug, Clone)]
pub struct Object {
    /// The callable (usually a [`Value::Global`]).
    pub callable: Value,
    /// Its arguments.
    pub args: Value,
    /// State set by BUILD, if any.
    pub state: Option<Value>,
}

/// A decoded pickle value.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A longer integer, as its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list (shared, as Python lists are).
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict or OrderedDict, in insertion order (shared).
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A global `module.name`.
    Global(String, String),
    /// A storage from a persistent id.
    Storage(StorageRef),
    /// A tensor.
    Tensor(TensorRef),
    /// Anything else, kept inert.
    Object(Rc<RefCell<Object>>),
}

impl Value {
    fn new_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Vec::new())))
    }
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    fn as_int_tuple(&self, what: &str) -> Result<Vec<i64>, String> {
        let items = match self {
            Value::Tuple(t) => t.clone(),
            Value::List(l) => l.borrow().clone(),
            other => return Err(format!("{what} is not a tuple of integers: {other:?}")),
        };
        items.iter().map(|v| v.as_int().ok_or_else(|| format!("{what} contains a non-integer: {v:?}"))).collect()
    }
    fn describe(&self) -> String {
        match self {
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Object(o) => format!("an object built by {}", o.borrow().callable.describe()),
            other => format!("{other:?}").chars().take(80).collect(),
        }
    }
}

/// Element type of a typed-storage class such as `torch.FloatStorage`.
pub fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// Turns a storage persistent id into a [`StorageRef`].
///
/// The zip format writes `('storage', storage_type, key, location, numel)`; the legacy format adds
/// `view_metadata`, either None or `(view_key, offset, view_numel)`.
fn storage_from_pid(pid: &Value) -> Result<StorageRef, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("persistent id is not a tuple: {}", pid.describe()));
    };
    if items.first().and_then(Value::as_str) != Some("storage") || items.len() < 5 {
        return Err(format!("unsupported persistent id: {}", pid.describe()));
    }
    let kind = match &items[1] {
        Value::Global(_, name) => storage_kind(name).ok_or_else(|| format!("unsupported storage type {name}"))?,
        other => return Err(format!("storage type is not a class: {}", other.describe())),
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is not a string: {}", other.describe())),
    };
    let numel = items[4].as_int().ok_or("storage size is not an integer")?;
    let mut view_offset = 0;
    if let Some(Value::Tuple(view)) = items.get(5) {
        // Legacy storage view (view_key, offset, numel): address the root storage directly.
        view_offset = view.get(1).and_then(Value::as_int).ok_or("malformed storage view metadata")?;
    }
    Ok(StorageRef { key, kind, numel, view_offset })
}

/// Applies a recognised global to its arguments (REDUCE); unknown ones become inert objects.
fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let arg_items = match &args {
        Value::Tuple(t) => t.clone(),
        _ => Vec::new(),
    };
    if let Value::Global(module, name) = &callable {
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => return Ok(Value::new_dict()),
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                if arg_items.len() < 4 {
                    return Err(format!("{module}.{name} called with {} arguments", arg_items.len()));
                }
                let Value::Storage(storage) = &arg_items[0] else {
                    return Err(format!("{name}: first argument is not a storage: {}", arg_items[0].describe()));
                };
                let offset = arg_items[1].as_int().ok_or("tensor storage offset is not an integer")?;
                let size = arg_items[2].as_int_tuple("tensor size")?;
                let stride = arg_items[3].as_int_tuple("tensor stride")?;
                if size.len() != stride.len() {
                    return Err(format!("tensor size {size:?} and stride {stride:?} differ in length"));
                }
                return Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, size, stride }));
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                return arg_items.into_iter().next().ok_or_else(|| format!("{name} called without data"));
            }
            ("torch", "Size") => return Ok(arg_items.into_iter().next().unwrap_or(Value::Tuple(Vec::new()))),
            ("_codecs", "encode") => {
                // Protocol-2 pickles of `bytes` under Python 3: `_codecs.encode(str, 'latin1')`.
                if let Some(Value::Str(s)) = arg_items.first() {
                    return Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(Rc::new(RefCell::new(Object { callable, args, state: None }))))
}

/// The pickle machine: a stack, a mark stack and a memo.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    storages: Vec<StorageRef>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle ends early at byte {} (needed {n} more bytes, {} left)", self.pos, self.data.len() - self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("unterminated text line in pickle")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "non-UTF-8 text in pickle")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 string in pickle")?))
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| format!("pickle stack underflow at byte {}", self.pos))
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| format!("pickle stack underflow at byte {pos}"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or_else(|| format!("pickle MARK missing at byte {}", self.pos))?;
        if mark > self.stack.len() {
            return Err(format!("pickle MARK beyond the stack at byte {}", self.pos));
        }
        Ok(self.stack.split_off(mark))
    }
    fn memo_get(&self, idx: u32) -> Result<Value, String> {
        self.memo.get(&idx).cloned().ok_or_else(|| format!("pickle memo entry {idx} is missing"))
    }
    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of items".into());
        }
        let target = self.top()?;
        let Value::Dict(d) = target else {
            return Err(format!("SETITEM(S) on a non-dict: {}", target.describe()));
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: length of the next frame, nothing to do
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'}' => self.stack.push(Value::new_dict()),
                b']' => self.stack.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("pickle stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::new_dict());
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().push(v),
                        other => return Err(format!("APPEND on a non-list: {}", other.describe())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        other => return Err(format!("APPENDS on a non-list: {}", other.describe())),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let i = u32::from(self.u8()?);
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'p' => {
                    let i: u32 = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' => {
                    let i = u32::from(self.u8()?);
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let i: u32 = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { usize::from(self.u8()?) } else { self.u32()? as usize };
                    let bytes = self.take(n)?.to_vec();
                    let v = if n == 0 {
                        Value::Int(0)
                    } else if n <= 8 {
                        let neg = bytes[n - 1] & 0x80 != 0;
                        let mut buf = [if neg { 0xff } else { 0 }; 8];
                        buf[..n].copy_from_slice(&bytes);
                        Value::Int(i64::from_le_bytes(buf))
                    } else {
                        Value::BigInt(bytes)
                    };
                    self.stack.push(v);
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line.trim() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().map_err(|_| format!("bad INT {s:?}"))?),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?.to_vec();
                    self.stack.push(if op == b'U' { Value::Str(b.iter().map(|&c| c as char).collect()) } else { Value::Bytes(b) });
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(if op == b'T' { Value::Str(b.iter().map(|&c| c as char).collect()) } else { Value::Bytes(b) });
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL with non-string operands".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = reduce(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    // OrderedDict attributes (state_dict._metadata) and tensor state are not needed.
                    if let Value::Object(o) = self.top()? {
                        o.borrow_mut().state = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = storage_from_pid(&pid)?;
                    self.storages.push(storage.clone());
                    self.stack.push(Value::Storage(storage));
                }
                other => {
                    return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {at}"));
                }
            }
        }
    }
}

/// Reads one pickle starting at `*pos`; on success `*pos` is just past its STOP opcode.
pub fn load(data: &[u8], pos: &mut usize) -> Result<Value, String> {
    load_with_storages(data, pos).map(|(v, _)| v)
}

/// Like [`load`], also returning every storage the pickle references (in order of appearance).
pub fn load_with_storages(data: &[u8], pos: &mut usize) -> Result<(Value, Vec<StorageRef>), String> {
    let mut m = Machine { data, pos: *pos, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), storages: Vec::new() };
    let v = m.run()?;
    *pos = m.pos;
    Ok((v, m.storages))
}

/// The `(name, tensor)` entries of a state dict, in file order.
///
/// Accepts a bare state dict or a training checkpoint that nests one under `state_dict`,
/// `model_state_dict`, `model` or `net`. Non-tensor entries are skipped.
pub fn state_dict_entries(root: &Value) -> Result<Vec<(String, TensorRef)>, String> {
    let Value::Dict(d) = root else {
        return Err(format!("the pickle does not hold a dict (found {})", root.describe()));
    };
    let d = d.borrow();
    let tensors: Vec<(String, TensorRef)> = d
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), t.clone())),
            _ => None,
        })
        .collect();
    if !tensors.is_empty() {
        return Ok(tensors);
    }
    for wanted in ["state_dict", "model_state_dict", "model", "net"] {
        if let Some((_, inner @ Value::Dict(_))) = d.iter().find(|(k, _)| k.as_str() == Some(wanted)) {
            return state_dict_entries(inner);
        }
    }
    Err("the pickle holds a dict without tensors (not a state dict)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `OrderedDict([('w', _rebuild_tensor_v2(storage, 1, (2, 2), (1, 2), False, OrderedDict()))])`
    /// written with the opcodes torch.save uses.
    fn tiny_state_dict() -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05");
        p.extend(b"X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x05tq\x08QK\x01K\x02K\x02\x86q\x09K\x01K\x02\x86q\x0a");
        p.extend(b"\x89h\x00)Rq\x0btq\x0cRq\x0du}q\x0eb.");
        p
    }

    #[test]
    fn reads_a_rebuild_tensor_state_dict() {
        let data = tiny_state_dict();
        let mut pos = 0;
        let v = load(&data, &mut pos).unwrap();
        assert_eq!(pos, data.len());
        let entries = state_dict_entries(&v).unwrap();
        assert_eq!(entries.len(), 1);
        let (name, t) = &entries[0];
        assert_eq!(name, "w");
        assert_eq!(t.storage, StorageRef { key: "0".into(), kind: Kind::Float, numel: 5, view_offset: 0 });
        assert_eq!((t.offset, t.size.clone(), t.stride.clone()), (1, vec![2, 2], vec![1, 2]));
    }

    #[test]
    fn truncated_pickle_is_an_error_not_a_panic() {
        let data = tiny_state_dict();
        for cut in 0..data.len() - 1 {
            let mut pos = 0;
            assert!(load(&data[..cut], &mut pos).is_err(), "cut at {cut} must fail");
        }
    }

    #[test]
    fn long1_magic_number_and_negative_ints() {
        let mut pos = 0;
        let magic = [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
        assert!(matches!(load(&magic, &mut pos).unwrap(), Value::BigInt(b) if b.len() == 10));
        let mut pos = 0;
        let neg = [0x80, 2, 0x8a, 0x01, 0xff, b'.'];
        assert_eq!(load(&neg, &mut pos).unwrap().as_int(), Some(-1));
    }

    #[test]
    fn unknown_globals_stay_inert() {
        let mut pos = 0;
        let data = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.";
        assert!(matches!(load(data, &mut pos).unwrap(), Value::Object(_)));
    }
}
