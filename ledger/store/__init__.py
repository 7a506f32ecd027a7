"""ledger/store"""
