"""ledger/verdict"""
