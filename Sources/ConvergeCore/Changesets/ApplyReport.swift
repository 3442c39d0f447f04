/// What an apply did: the one report of every replica kind (the in-memory ``Replica``, the
/// SQLite store, the server's storage).
///
/// The counts come from the ``ApplyPlanner``'s plan; the feed positions and the
/// rejections from the shell that carried it out, inside the apply's transaction.
public struct ApplyReport: Sendable, Hashable {
    /// Records whose merge state changed.
    public var changedRecords = 0
    /// Records held back because they were stamped too far in the future.
    public var quarantinedRecords = 0
    /// Earlier quarantined records applied now that local time caught up.
    public var releasedRecords = 0
    /// True when the changeset showed this replica's own stamps beyond its clock (it
    /// was restored from a backup or copied): the replica took a new identity.
    public var identityReset = false
    /// The feed's position just before and just after the apply, read in its
    /// transaction. A peer whose `sent` cursor had reached `feedBefore` holds everything
    /// up to `feedAfter` too when the changeset came from it: move the cursor there, and
    /// what was just pulled is not pushed back.
    public var feedBefore: UInt64 = 0
    /// See ``feedBefore``.
    public var feedAfter: UInt64 = 0
    /// Changes refused by the validator and undone by compensating writes, in key order
    /// (``ValidationPlanner``).
    public var rejections: [ChangeRejection] = []

    /// A report with the given counts (of an apply that did nothing, by default).
    public init(changedRecords: Int = 0, quarantinedRecords: Int = 0, releasedRecords: Int = 0) {
        self.changedRecords = changedRecords
        self.quarantinedRecords = quarantinedRecords
        self.releasedRecords = releasedRecords
    }

    /// A report of `plan`'s counts, the rest at its defaults.
    public init(_ plan: ApplyPlanner.Plan) {
        self.init(changedRecords: plan.counts.changedRecords, quarantinedRecords: plan.counts.quarantinedRecords, releasedRecords: plan.counts.releasedRecords)
    }
}

/// A remote change a replica refused and undid (see ``ValidationPlanner``).
///
/// The time is the replica's own reading of physical time in milliseconds, as every clock
/// input of the core; the SQLite store adds a `date` for apps that want a `Date`.
public struct ChangeRejection: Sendable, Hashable {
    /// Increasing, per database: a peer that delivers rejections keeps the last one it sent.
    public let id: Int64
    /// The refused record's table.
    public let table: String
    /// The refused record's primary key.
    public let key: Value
    /// The validator's reason, meant for the user.
    public let reason: String
    /// Who sent the refused change, as given to the apply.
    public let origin: String?
    /// When the change was refused: milliseconds since 1970, as the replica's
    /// configuration reads physical time.
    public let physicalMilliseconds: UInt64

    /// A rejection as recorded.
    public init(id: Int64, table: String, key: Value, reason: String, origin: String?, physicalMilliseconds: UInt64) {
        self.id = id
        self.table = table
        self.key = key
        self.reason = reason
        self.origin = origin
        self.physicalMilliseconds = physicalMilliseconds
    }
}
