"""lymphosort.evaluate"""
