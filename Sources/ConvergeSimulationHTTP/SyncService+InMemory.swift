import ConvergeServer
import ConvergeSync

extension SyncService {
    /// A transport that calls this service in-process (tests, the simulator): it lives here,
    /// beside both, because the server does not depend on the client module.
    public func inMemoryTransport() -> InMemorySyncTransport {
        InMemorySyncTransport { body, authorization in
            let response = await self.sync(body: body, authorization: authorization)
            return (response.status, response.body)
        }
    }
}
