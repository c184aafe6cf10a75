import Foundation
import Hummingbird
import KeelCore
import KeelJobs
import KeelServer

/// Schedules (Celery Beat's table): next and last runs, pause/resume, trigger now, and a form to create or
/// edit one that validates the cron expression and previews its next five fire times in its time zone.
struct SchedulePages {
    let console: Console

    func install(on router: Router<KeelRequestContext>) {
        console.page(router, "/console/schedules", "schedules", permission: "jobs:read") { request, _, session in
            let parameters = request.uri.queryParameters
            var form: [String: String] = [:]
            if let name = parameters.get("edit"), let schedule = try? await console.jobs.schedule(named: name) {
                form = ["name": schedule.name, "cron": schedule.cron ?? "", "every_seconds": schedule.everySeconds.map(String.init) ?? "",
                        "timezone": schedule.timezone, "queue": schedule.queue, "task": schedule.task,
                        "args": Display.json(schedule.args), "misfire": schedule.misfire]
            } else {
                for field in ["name", "cron", "every_seconds", "timezone", "queue", "task", "args", "misfire"] {
                    if let value = parameters.get(field) { form[field] = String(value.prefix(2000)) }
                }
            }
            return try await page(session: session, form: form, errors: [], notice: Notice.message(request), status: .ok)
        }
        // The live preview the form's script asks for; without script, the form's Preview button reloads the page.
        console.page(router, "/console/schedules/preview", "schedules.preview", permission: "jobs:read") { request, _, session in
            let parameters = request.uri.queryParameters
            let preview = Self.preview(cron: parameters.get("cron"), timezone: parameters.get("timezone"), now: console.clock.now())
            return console.fragment("schedule_preview", preview)
        }
        console.action(router, "/console/schedules", "schedule.save", permission: "jobs:write") { _, _, session, form in
            var values: [String: String] = [:]
            for field in ["name", "cron", "every_seconds", "timezone", "queue", "task", "args", "misfire"] { values[field] = form[field] ?? "" }
            var errors: [String] = []
            var args: JSONValue?
            if let text = form["args"] {
                do { args = try JSONDecoder.keel().decode(JSONValue.self, from: Data(text.utf8)) } catch { errors.append("Arguments: not valid JSON.") }
            }
            var every: Int?
            if let text = form["every_seconds"] {
                every = Int(text)
                if every == nil { errors.append("Every: must be a whole number of seconds.") }
            }
            guard errors.isEmpty, let name = form["name"], let task = form["task"] else {
                if form["name"] == nil { errors.append("Name: required.") }
                if form["task"] == nil { errors.append("Task: required.") }
                return try await page(session: session, form: values, errors: errors, notice: nil, status: .badRequest)
            }
            let input = ScheduleInput(name: name, cron: form["cron"], everySeconds: every, timezone: form["timezone"], queue: form["queue"],
                                      task: task, args: args, misfire: form["misfire"])
            do {
                _ = try await console.jobs.saveSchedule(named: name, input)
            } catch let problem as Problem where problem.status == .badRequest || problem.status == .unprocessableContent {
                return try await page(session: session, form: values, errors: Self.messages(problem), notice: nil, status: problem.status)
            }
            return Console.redirect("/console/schedules?done=schedule_saved")
        }
        console.action(router, "/console/schedules/{name}/pause", "schedule.pause", permission: "jobs:write") { _, context, _, _ in
            _ = try await console.jobs.setSchedulePaused(try context.parameters.require("name"), paused: true)
            return Console.redirect("/console/schedules?done=schedule_paused")
        }
        console.action(router, "/console/schedules/{name}/resume", "schedule.resume", permission: "jobs:write") { _, context, _, _ in
            _ = try await console.jobs.setSchedulePaused(try context.parameters.require("name"), paused: false)
            return Console.redirect("/console/schedules?done=schedule_resumed")
        }
        console.action(router, "/console/schedules/{name}/trigger", "schedule.trigger", permission: "jobs:write") { _, context, _, _ in
            let job = try await console.jobs.triggerSchedule(try context.parameters.require("name"))
            return Console.redirect("/console/jobs/\(job.id)")
        }
        console.action(router, "/console/schedules/{name}/delete", "schedule.delete", permission: "jobs:write") { _, context, _, _ in
            try await console.jobs.deleteSchedule(named: try context.parameters.require("name"))
            return Console.redirect("/console/schedules?done=schedule_deleted")
        }
    }

    private func page(session: ConsoleSession, form: [String: String], errors: [String], notice: String?, status: HTTPResponse.Status) async throws -> Response {
        let now = console.clock.now()
        let schedules = try await console.jobs.schedules().map { schedule -> [String: Any] in
            ["name": schedule.name, "when": schedule.cron.map { "cron \($0)" } ?? schedule.everySeconds.map { "every \($0) s" } ?? "",
             "timezone": schedule.timezone, "task": schedule.task, "queue": schedule.queue, "paused": schedule.paused,
             "declared": schedule.declared, "next": Display.time(schedule.nextRunAt), "last": Display.time(schedule.lastRunAt),
             "last_job": schedule.lastJobID ?? ""]
        }
        var data: [String: Any] = [
            "schedules": schedules, "can_write": session.may("jobs:write"), "notice": notice ?? "",
            "errors": errors.map { ["message": $0] }, "has_errors": !errors.isEmpty,
            "form": form, "misfire_run_once": form["misfire"] == "run_once",
        ]
        data["preview"] = Self.preview(cron: form["cron"], timezone: form["timezone"], now: now)
        return console.html("schedules", title: "Schedules", session: session, section: "schedules", data, status: status)
    }

    /// The next five fire times of `cron` in `timezone`, or what is wrong with them.
    static func preview(cron: String?, timezone: String?, now: Date) -> [String: Any] {
        guard let cron = cron?.trimmingCharacters(in: .whitespaces), !cron.isEmpty else { return ["empty": true] }
        guard cron.count <= 200 else { return ["error": "The cron expression is longer than 200 characters."] }
        let zoneName = timezone.flatMap { $0.isEmpty ? nil : $0 } ?? "UTC"
        guard let zone = TimeZone(identifier: zoneName) else { return ["error": "\"\(zoneName)\" is not an IANA time zone such as Europe/Berlin."] }
        let expression: CronExpression
        do { expression = try CronExpression(cron) } catch { return ["error": "Cron: \(error.description)"] }
        var times: [[String: String]] = []
        var cursor = now
        while times.count < 5, let next = expression.next(after: cursor, in: zone) {
            times.append(["local": Display.time(next, in: zone), "utc": Display.time(next)])
            cursor = next
        }
        return ["times": times, "timezone": zoneName]
    }

    static func messages(_ problem: Problem) -> [String] {
        guard case .array(let errors)? = problem.extensions["errors"] else { return [problem.detail] }
        return errors.compactMap { error in
            guard case .object(let fields) = error, case .string(let field)? = fields["field"], case .string(let message)? = fields["message"] else { return nil }
            return "\(field): \(message)"
        }
    }
}
