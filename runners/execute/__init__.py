"""runners/execute"""
