package main

func runManyFeedsLive(mc manyFeedsConfig) error { return nil }
