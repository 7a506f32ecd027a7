"""ledger/integrity"""
