"""ledger/billing"""
