//! The key tree both Hyper-V encodings hold: XML version 5 (`<name type="integer">5</name>`)
//! and the binary .vmcx key store name the same keys (`configuration/properties/name`), so
//! one reader ([`super::read`]) serves both.

/// A key's value, typed as the file types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A node that only holds children (or a key whose type is not read).
    None,
    /// `type="string"`, a .vmcx string.
    Str(String),
    /// `type="integer"`, a .vmcx signed or unsigned integer.
    Int(i128),
    /// `type="bool"`, a .vmcx boolean.
    Bool(bool),
}

/// One key with its value and its children, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The key's name (an element name, a .vmcx key).
    pub name: String,
    /// Its value.
    pub value: Value,
    /// Its children.
    pub children: Vec<Node>,
}

impl Node {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The node at `path` (`a/b/c`) below this one.
    pub fn at(&self, path: &str) -> Option<&Node> {
        path.split('/').try_fold(self, |n, part| n.child(part))
    }

    /// The string at `path`, when it is a string.
    pub fn str_at(&self, path: &str) -> Option<&str> {
        match &self.at(path)?.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer at `path`, when it is one.
    pub fn int_at(&self, path: &str) -> Option<i128> {
        match self.at(path)?.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The boolean at `path`, when it is one.
    pub fn bool_at(&self, path: &str) -> Option<bool> {
        match self.at(path)?.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}
