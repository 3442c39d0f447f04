import ConvergeCore
import ConvergeTestSupport
import PropertyBased
import Testing

@Suite(.computeBound) struct ClockTests {
    @Test func monotonicUnderAnyInterleaving() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SeededGenerator(seed: seed)
            var clock = HybridClock()
            var previous = HLC.zero
            var physical = UInt64(rng.below(1_000_000))
            for _ in 0..<200 {
                physical = rng.chance(0.2) ? physical - min(physical, UInt64(rng.below(10_000))) : physical + UInt64(rng.below(3))
                let next: HLC
                if rng.chance(0.5) {
                    next = clock.tick(physicalMilliseconds: physical)
                } else {
                    let remote = HLC(milliseconds: physical + UInt64(rng.below(2_000)) - min(physical, 1_000), counter: UInt16(rng.below(3)))
                    next = clock.receive(remote, physicalMilliseconds: physical)
                    #expect(next > remote)
                }
                #expect(next > previous)
                #expect(next.milliseconds >= physical)
                previous = next
            }
        }
    }

    @Test func receiveThenTickIsGreater() async {
        await propertyCheck(input: Gen.uint64(in: 0...(1 << 40)), Gen.uint64(in: 0...(1 << 40)), Gen.uint64(in: 0...(1 << 40))) { local, remote, physical in
            var clock = HybridClock(latest: HLC(rawValue: local))
            clock.receive(HLC(rawValue: remote), physicalMilliseconds: physical >> 16)
            let tick = clock.tick(physicalMilliseconds: physical >> 16)
            #expect(tick > HLC(rawValue: remote))
            #expect(tick > HLC(rawValue: local))
        }
    }

    @Test func counterOverflowRollsIntoNextMillisecond() {
        var clock = HybridClock(latest: HLC(milliseconds: 1_000, counter: .max - 1))
        #expect(clock.tick(physicalMilliseconds: 1_000) == HLC(milliseconds: 1_000, counter: .max))
        #expect(clock.tick(physicalMilliseconds: 1_000) == HLC(milliseconds: 1_001, counter: 0))
        #expect(clock.tick(physicalMilliseconds: 999) == HLC(milliseconds: 1_001, counter: 1))
    }

    @Test func tickFollowsPhysicalTime() {
        var clock = HybridClock()
        #expect(clock.tick(physicalMilliseconds: 5) == HLC(milliseconds: 5))
        #expect(clock.tick(physicalMilliseconds: 5) == HLC(milliseconds: 5, counter: 1))
        #expect(clock.tick(physicalMilliseconds: 9) == HLC(milliseconds: 9))
        #expect(clock.receive(HLC(milliseconds: 20, counter: 7), physicalMilliseconds: 10) == HLC(milliseconds: 20, counter: 8))
        #expect(clock.receive(HLC(milliseconds: 3), physicalMilliseconds: 30) == HLC(milliseconds: 30))
    }

    @Test func driftDetection() {
        let now: UInt64 = 1_000_000
        let limit = HybridClock.defaultMaxDriftMilliseconds
        #expect(!HybridClock.isTooFarAhead(HLC(milliseconds: now + limit), physicalMilliseconds: now, maxDriftMilliseconds: limit))
        #expect(HybridClock.isTooFarAhead(HLC(milliseconds: now + limit + 1), physicalMilliseconds: now, maxDriftMilliseconds: limit))
        #expect(!HybridClock.isTooFarAhead(HLC(milliseconds: 1), physicalMilliseconds: now, maxDriftMilliseconds: 0))
    }
}

@Suite(.computeBound) struct StampTests {
    @Test func totalOrder() async {
        let ids = (0..<3).map(Fixtures.replicaID)
        let stamps = (0..<4).flatMap { hlc in ids.map { Stamp(hlc: HLC(rawValue: UInt64(hlc)), replica: $0) } }
        for a in stamps {
            #expect(!(a < a))
            for b in stamps {
                #expect((a < b) != (b < a) || a == b)   // trichotomy, antisymmetry
                for c in stamps where a < b && b < c { #expect(a < c) }
            }
        }
        // The replica breaks ties as an unsigned big-endian 128-bit integer.
        let low = ReplicaID(high: 1, low: .max), high = ReplicaID(high: 2, low: 0)
        #expect(Stamp(hlc: HLC(rawValue: 7), replica: low) < Stamp(hlc: HLC(rawValue: 7), replica: high))
        #expect(ReplicaID(high.description) == high)
    }
}
