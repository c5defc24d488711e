"""Billing: stores every priced call once and serves usage per account and per conversation."""
