//! The fixed topics and human queues that analytics, the console and other tools rely on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}

named_enum! {
    /// What a buyer message is about. Every rule has one.
    Topic {
        Greeting => "greeting",
        Product => "product",
        Price => "price",
        Order => "order",
        Payment => "payment",
        Shipping => "shipping",
        Logistics => "logistics",
        Invoice => "invoice",
        Refund => "refund",
        AfterSale => "after_sale",
        Complaint => "complaint",
        BadReview => "bad_review",
        Human => "human",
        Thanks => "thanks",
        Other => "other",
    }
}

named_enum! {
    /// The human queues escalated chats wait in.
    Queue {
        Refund => "refund",
        AfterSale => "after_sale",
        Complaint => "complaint",
        BadReview => "bad_review",
        Human => "human",
    }
}

impl Topic {
    pub fn names() -> String {
        Topic::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Queue {
    pub fn names() -> String {
        Queue::ALL
            .iter()
            .map(|q| q.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How the queue is named to a buyer.
    pub fn display_zh(self) -> &'static str {
        match self {
            Queue::Refund => "退款退货",
            Queue::AfterSale => "售后",
            Queue::Complaint => "投诉处理",
            Queue::BadReview => "评价处理",
            Queue::Human => "人工客服",
        }
    }
}
